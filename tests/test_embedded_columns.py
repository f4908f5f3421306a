"""Text columns of many values as learned vectors: TablePreprocessor(max_one_hot=...)
codes them (scikit-learn's OrdinalEncoder as the reference), the command line puts an
Embedding of them first (--one-hot-max), folds its scaling past it, keeps a value never
seen at a zero vector, and predict, evaluate and the ONNX graph read the raw file."""
import numpy as np
import pytest
from conftest import assert_cli_reads_raw_file, write_columns

import fastnn as fnn
from fastnn import cli
from fastnn.models import tabular_mlp
from fastnn.preprocessing import TablePreprocessor, category_key


def table(rng, n=400, unseen=False):
    """A text column of 40 values (with blanks), a numeric one with blanks, a text column
    of 3 values; the label mostly the city's (half the cities "high"), a little the
    others'."""
    city = rng.integers(0, 40, n)
    cells = np.array([f"city{c}" for c in city], dtype=object)
    cells[rng.random(n) < 0.05] = None
    if unseen:
        cells[:4] = "nowhere"
    weight = np.round(rng.normal(70, 10, n), 2).astype(object)
    weight[rng.random(n) < 0.1] = None
    kind = rng.choice(["a", "b", "c"], n)
    heavy = np.array([70 if w is None else w for w in weight]) > 80
    labels = np.where((np.sin(np.arange(40))[city] > 0) | (kind == "a") & heavy, "high",
                      "low")
    return {"city": list(cells), "weight": list(weight), "kind": list(kind)}, labels


def test_codes_are_scikit_learns_ordinal_encoder_with_unknown_values_last(rng):
    """A column of more values than max_one_hot becomes one column of codes: the index
    among the sorted training values, the count of them for a value never seen, the most
    frequent value's where missing (with the indicator column); others stay one-hot."""
    pytest.importorskip("sklearn")
    from sklearn.impute import SimpleImputer
    from sklearn.preprocessing import OrdinalEncoder
    (train, _), (test, _) = table(rng), table(rng, 60, unseen=True)
    pre = TablePreprocessor(max_one_hot=3).fit(train)
    assert [c["kind"] for c in pre.columns] == ["codes", "numeric", "categorical"]
    assert pre.output_names[:2] == ["city", "city (missing)"]
    assert pre.code_columns == [0] and pre.cardinalities == [41]
    got = pre.transform(test)

    def cells(data):
        return np.array([[np.nan if c is None else c] for c in data["city"]], dtype=object)

    imputer = SimpleImputer(strategy="most_frequent", add_indicator=True).fit(cells(train))
    encoder = OrdinalEncoder(handle_unknown="use_encoded_value", unknown_value=40).fit(
        imputer.transform(cells(train))[:, :1])
    filled = imputer.transform(cells(test))
    np.testing.assert_array_equal(got[:, 0], encoder.transform(filled[:, :1])[:, 0])
    np.testing.assert_array_equal(got[:, 1], filled[:, 1].astype(float))
    assert (got[:4, 0] == 40).all()  # "nowhere"
    one_hot = TablePreprocessor().fit(train)  # the other columns as without codes
    np.testing.assert_array_equal(got[:, 2:], one_hot.transform(test)[:, 41:])
    assert TablePreprocessor.from_config(pre.to_config()).to_config() == pre.to_config()
    with pytest.raises(ValueError, match="max_one_hot"):
        TablePreprocessor(max_one_hot=-1)


def test_folding_the_scaling_past_an_embedding_keeps_the_predictions(rng):
    """fold_standardization of a model whose first layer embeds code columns: the folded
    model on raw rows predicts what the model predicted on standardized rows (codes
    untouched)."""
    X = np.column_stack([rng.normal(5, 3, 50), rng.integers(0, 7, 50),
                         rng.normal(-2, 0.5, 50), rng.integers(0, 4, 50)]).astype(float)
    model = tabular_mlp(4, 2, n_blocks=2, d_block=8, dropout=0, dtype="float64", seed=1,
                        cat_columns=[1, 3], cat_cardinalities=[7, 4], d_embedding=3)
    pre = TablePreprocessor()
    pre.columns = [{"name": str(j), "kind": kind, "fill": 0, "indicator": False,
                    **({"categories": []} if kind == "codes" else {})}
                   for j, kind in enumerate(["numeric", "codes", "numeric", "codes"])]
    mean, std = cli._standardized_columns(X, pre)
    assert mean[[1, 3]].tolist() == [0, 0] and std[[1, 3]].tolist() == [1, 1]
    expected = model.predict((X - mean) / std)
    cli.fold_standardization(model, mean, std)
    np.testing.assert_allclose(model.predict(X), expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("arch", ["mlp", "resnet"])
def test_a_text_column_of_many_values_trains_embedded_from_the_raw_file(rng, tmp_path,
                                                                       capsys, arch):
    """train: the model starts with an Embedding of the coded column (the others one-hot),
    says so, and the unseen value's vector stays zero through training; predict and
    evaluate read a raw file with blanks and a value never seen as the network computes
    on the preprocessed rows; the file loads back with the same layout."""
    data, labels = table(rng)
    write_columns(tmp_path / "train.csv", data, labels)
    model_path = tmp_path / "m.npz"
    assert cli.main(["train", str(tmp_path / "train.csv"), "--verbose", "0",
                     "--one-hot-max", "10", "--embedding-dim", "12", "--arch", arch,
                     "--hidden", "32", "--save", str(model_path)]) == 0
    assert "1 of them text column with more than --one-hot-max values, as learned " \
           "vectors of 12" in capsys.readouterr().out
    model = fnn.load(model_path)
    first = model.layers[0]
    assert isinstance(first, fnn.Embedding) and first.embedding_dim == 12
    assert (first.columns, first.cardinalities) == ([0], [41])
    assert not first.weight[40].any() and first.weight[:40].any()
    test, test_labels = table(rng, 80, unseen=True)
    write_columns(tmp_path / "test.csv", test, test_labels)
    accuracy = assert_cli_reads_raw_file(model_path, tmp_path / "test.csv", test,
                                         test_labels, capsys)
    assert accuracy > 0.85  # the city decides most labels: its vectors were learned


def test_the_default_one_hot_limit_keeps_few_values_one_hot(rng, tmp_path):
    data, labels = table(rng)
    write_columns(tmp_path / "train.csv", data, labels)
    assert cli.main(["train", str(tmp_path / "train.csv"), "--epochs", "1", "--verbose",
                     "0", "--save", str(tmp_path / "m.npz")]) == 0
    model = fnn.load(tmp_path / "m.npz")
    assert isinstance(model.layers[0], fnn.Dense)
    assert model.preprocessing.code_columns == []


@pytest.mark.parametrize("dtype, rtol", [("float32", 1e-5), ("float64", 1e-12)])
def test_onnx_of_an_embedded_column_reads_raw_text_as_predict_does(rng, tmp_path, capsys,
                                                                   dtype, rtol):
    """The exported graph maps the text to its code (the unseen code for a value never
    seen, the fill's for a blank) and gathers its vector: onnxruntime's labels and
    probabilities are `fastnn predict`'s."""
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    data, labels = table(rng)
    write_columns(tmp_path / "train.csv", data, labels)
    model_path, onnx_path = tmp_path / "m.npz", tmp_path / "m.onnx"
    assert cli.main(["train", str(tmp_path / "train.csv"), "--epochs", "5", "--verbose",
                     "0", "--one-hot-max", "2", "--dtype", dtype, "--save",
                     str(model_path)]) == 0
    assert cli.main(["export", str(model_path), str(onnx_path)]) == 0
    test, test_labels = table(rng, 60, unseen=True)
    write_columns(tmp_path / "test.csv", test, test_labels)
    capsys.readouterr()
    assert cli.main(["predict", str(model_path), str(tmp_path / "test.csv"), "--proba"]) == 0
    proba = np.array([[float(v) for v in line.split(",")]
                      for line in capsys.readouterr().out.splitlines()[1:]])
    assert cli.main(["predict", str(model_path), str(tmp_path / "test.csv")]) == 0
    predicted = capsys.readouterr().out.splitlines()[1:]
    session = ort.InferenceSession(str(onnx_path))
    feeds = {}
    for column in session.get_inputs():
        cells = test[column.name]
        feeds[column.name] = np.array(
            [["" if v is None else category_key(v)] for v in cells], dtype=object) \
            if column.type == "tensor(string)" else \
            np.array([[np.nan if v is None else float(v)] for v in cells], dtype=dtype)
    probabilities, label = session.run(["probabilities", "label"], feeds)
    assert list(label) == predicted
    np.testing.assert_allclose(probabilities, proba, rtol=rtol, atol=rtol)
