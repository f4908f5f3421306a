"""scikit-learn's hyperparameter search over fastnn.sklearn estimators on a Dask cluster
(joblib's "dask" backend), as docs/distributed.md shows: a LocalCluster of two worker
processes bound to loopback gives the same search results as running it here."""
import pytest

pytest.importorskip("sklearn")


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_grid_search_on_a_local_dask_cluster_matches_a_local_search():
    distributed = pytest.importorskip("distributed")
    import joblib
    import numpy as np
    from sklearn.datasets import make_classification
    from sklearn.model_selection import GridSearchCV

    from fastnn.sklearn import MLPClassifier

    X, y = make_classification(n_samples=300, n_features=10, n_informative=6,
                               n_classes=3, random_state=0)
    grid = {"hidden_layer_sizes": [(16,), (32,)], "alpha": [1e-4, 1e-2]}

    def search():
        estimator = MLPClassifier(max_iter=30, random_state=0, batch_size=32)
        return GridSearchCV(estimator, grid, cv=3).fit(X, y)

    here = search()
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  host="127.0.0.1", dashboard_address=None) as cluster, \
            distributed.Client(cluster) as client:
        with joblib.parallel_backend("dask"), distributed.get_task_stream(client) as tasks:
            remote = search()
        workers = set(client.scheduler_info()["workers"])
    # the 4 x 3 cross-validation fits ran on the cluster's two worker processes
    assert len(tasks.data) >= 12
    assert {task["worker"] for task in tasks.data} <= workers and len(workers) == 2
    assert remote.best_params_ == here.best_params_
    np.testing.assert_allclose(remote.cv_results_["mean_test_score"],
                               here.cv_results_["mean_test_score"], rtol=0, atol=1e-12)
    np.testing.assert_allclose(remote.predict_proba(X), here.predict_proba(X), rtol=1e-12)
