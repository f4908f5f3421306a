"""Missing values and categorical columns (fastnn.preprocessing, and the command line's
use of it): scikit-learn's imputer and one-hot encoder as the reference, the fitted state
saved in the model file and checked when read, raw files with blanks and text predicted
as the model was trained."""
import numpy as np
import pytest
from conftest import assert_cli_reads_raw_file, write_columns

import fastnn as fnn
from fastnn import cli
from fastnn.preprocessing import TablePreprocessor, category_key


def table(rng, n=300, unseen=False):
    """A numeric column with blanks, a categorical one with blanks, a clean one."""
    size = rng.choice(["S", "M", "L", "XL"], n).astype(object)
    weight = np.round(rng.normal(70, 10, n), 2).astype(object)
    size[rng.random(n) < 0.1] = None
    weight[rng.random(n) < 0.15] = None
    if unseen:
        size[:5] = "XXL"
    return {"size": list(size), "weight": list(weight),
            "height": list(np.round(rng.normal(170, 8, n), 1))}


def test_the_matrix_is_scikit_learns_imputer_and_one_hot_encoder(rng):
    """Median imputation with an indicator, one-hot with unknown values ignored and a
    missing category filled with the most frequent, against scikit-learn's."""
    pytest.importorskip("sklearn")
    from sklearn.impute import SimpleImputer
    from sklearn.preprocessing import OneHotEncoder
    train, test = table(rng), table(rng, 50, unseen=True)
    pre = TablePreprocessor().fit(train)
    got = pre.transform(test)
    assert pre.output_names == ["size=L", "size=M", "size=S", "size=XL", "size (missing)",
                                "weight", "weight (missing)", "height"]

    def column(data, name, numeric):
        cells = data[name]
        return np.array([[np.nan if c is None else c] for c in cells],
                        dtype=float if numeric else object)  # NaN: missing, for both

    imputer = SimpleImputer(strategy="median", add_indicator=True)
    imputer.fit(column(train, "weight", True))
    np.testing.assert_array_equal(got[:, 5:7], imputer.transform(column(test, "weight", True)))
    mode = SimpleImputer(strategy="most_frequent", add_indicator=True).fit(
        column(train, "size", False))
    filled = mode.transform(column(test, "size", False))
    encoder = OneHotEncoder(handle_unknown="ignore").fit(
        mode.transform(column(train, "size", False))[:, :1])
    np.testing.assert_array_equal(got[:, :4], encoder.transform(filled[:, :1]).toarray())
    np.testing.assert_array_equal(got[:, 4], filled[:, 1].astype(float))
    np.testing.assert_array_equal(got[:, 7], test["height"])
    assert got[:5, :4].sum() == 0  # "XXL" was never seen: all zeros


def test_numbers_in_a_categorical_column_are_one_value_however_written():
    pre = TablePreprocessor().fit({"code": ["1", "2", "x", "1.0"]})
    assert pre.columns[0]["categories"] == ["1.0", "2.0", "x"]
    np.testing.assert_array_equal(pre.transform({"code": ["1e0", 2, "x", "y"]}),
                                  [[1, 0, 0], [0, 1, 0], [0, 0, 1], [0, 0, 0]])


def test_a_saved_state_is_checked_like_a_config():
    good = TablePreprocessor().fit({"a": [1.0, None], "b": ["u", "v"]}).to_config()
    assert TablePreprocessor.from_config(good).to_config() == good
    bad_cases = [[], "x", [{"name": "a"}], [dict(good[0], fill="x")],
                 [dict(good[0], kind="other")], [dict(good[1], categories=["u", "u"])],
                 [dict(good[1], categories="uv")], [good[0], good[0]],
                 [dict(good[0], extra=1)], [dict(good[0], fill=float("nan"))]]
    for bad in bad_cases:
        with pytest.raises(ValueError, match="preprocessing"):
            TablePreprocessor.from_config(bad)


def test_raw_files_with_blanks_and_text_train_predict_and_evaluate(rng, tmp_path, capsys):
    """train on a CSV with a categorical column and blank cells; the model file carries
    the preprocessing (fitted on the training rows: a value only in the validation rows is
    not a category); predict and evaluate read raw files with blanks, text and a value
    never seen, and give what the network computes on the preprocessed rows."""
    data = table(rng)
    data["size"][-1] = "only-in-validation"
    labels = np.where(np.array([0 if w is None else w for w in data["weight"]]) > 70,
                      "heavy", "light")
    write_columns(tmp_path / "train.csv", data, labels)
    model_path = tmp_path / "m.npz"
    assert cli.main(["train", str(tmp_path / "train.csv"), "--epochs", "5", "--verbose",
                     "0", "--validation-split", "0.1", "--save", str(model_path)]) == 0
    model = fnn.load(model_path)
    assert model.feature_names == ["size", "weight", "height"]
    assert model.preprocessing.columns[0]["categories"] == ["L", "M", "S", "XL"]
    assert model.n_features == model.preprocessing.n_outputs == 8
    test = table(rng, 40, unseen=True)
    test_labels = np.where(rng.random(40) > 0.5, "heavy", "light")
    write_columns(tmp_path / "test.csv", test, test_labels)
    assert_cli_reads_raw_file(model_path, tmp_path / "test.csv", test, test_labels, capsys)


def test_a_numbers_only_model_refuses_a_file_with_blanks(rng, tmp_path, capsys):
    X = rng.normal(size=(60, 2))
    with open(tmp_path / "clean.csv", "w") as f:
        f.write("a,b,y\n" + "".join(f"{r[0]},{r[1]},{int(r[0] > 0)}\n" for r in X))
    assert cli.main(["train", str(tmp_path / "clean.csv"), "--epochs", "1", "--verbose",
                     "0", "--save", str(tmp_path / "m.npz")]) == 0
    assert fnn.load(tmp_path / "m.npz").preprocessing is None
    with open(tmp_path / "blank.csv", "w") as f:
        f.write("a,b\n1,\n2,3\n")
    capsys.readouterr()
    assert cli.main(["predict", str(tmp_path / "m.npz"), str(tmp_path / "blank.csv")]) == 2
    assert "column 'b' has missing cells or text" in capsys.readouterr().err


@pytest.mark.parametrize("dtype, rtol", [("float32", 1e-5), ("float64", 1e-12)])
def test_onnx_of_a_command_line_model_reads_raw_columns_as_predict_does(rng, tmp_path,
                                                                          capsys, dtype, rtol):
    """`fastnn export` of a classifier trained on a CSV with a text column and blank
    cells: onnxruntime, given the raw columns (text as category keys, blanks as "" and
    NaN, a value never seen in training), outputs the labels `fastnn predict` writes and
    the probabilities of `--proba`; network_only writes the network alone."""
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    data = table(rng, 200)
    labels = np.where(np.array([0 if w is None else w for w in data["weight"]]) > 70,
                      "heavy", "light")
    write_columns(tmp_path / "train.csv", data, labels)
    model_path, onnx_path = tmp_path / "m.npz", tmp_path / "m.onnx"
    assert cli.main(["train", str(tmp_path / "train.csv"), "--epochs", "5", "--verbose",
                     "0", "--dtype", dtype, "--save", str(model_path)]) == 0
    assert cli.main(["export", str(model_path), str(onnx_path)]) == 0
    test = table(rng, 40, unseen=True)
    write_columns(tmp_path / "test.csv", test, np.where(rng.random(40) > 0.5, "heavy", "light"))
    capsys.readouterr()
    assert cli.main(["predict", str(model_path), str(tmp_path / "test.csv")]) == 0
    predicted = capsys.readouterr().out.splitlines()[1:]
    assert cli.main(["predict", str(model_path), str(tmp_path / "test.csv"), "--proba"]) == 0
    proba = np.array([[float(v) for v in line.split(",")]
                      for line in capsys.readouterr().out.splitlines()[1:]])
    session = ort.InferenceSession(str(onnx_path))
    feeds = {}
    for column in session.get_inputs():
        cells = test[column.name]
        if column.type == "tensor(string)":
            feeds[column.name] = np.array([["" if v is None else category_key(v)]
                                           for v in cells], dtype=object)
        else:
            feeds[column.name] = np.array([[np.nan if v is None else float(v)]
                                           for v in cells], dtype=dtype)
    out, probabilities, label = session.run(["output", "probabilities", "label"], feeds)
    assert list(label) == predicted
    np.testing.assert_allclose(probabilities, proba, rtol=rtol, atol=rtol)
    model = fnn.load(model_path)
    X = model.preprocessing.transform(test)
    np.testing.assert_allclose(out, model.predict(X), rtol=rtol, atol=rtol)
    model.export_onnx(tmp_path / "net.onnx", network_only=True)
    session = ort.InferenceSession(str(tmp_path / "net.onnx"))
    assert [o.name for o in session.get_outputs()] == ["output"]
    net = session.run(None, {"input": X.astype(dtype)})[0]
    np.testing.assert_allclose(net, model.predict(X), rtol=rtol, atol=rtol)
