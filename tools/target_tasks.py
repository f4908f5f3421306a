"""What `fastnn train --task auto` makes of the targets of the tables bundled with
scikit-learn and statsmodels (no download): each table's rows, distinct target values and
the task chosen (fastnn.tabular.choose_task), beside the task the table is known for where
it is known. The whole-number rule in choose_task was set from this listing.

    pip install scikit-learn statsmodels && python tools/target_tasks.py
"""
import warnings

import numpy as np

from fastnn.tabular import choose_task

# scikit-learn's tables and the task each is published for; statsmodels' are listed with
# "?" unless named here (its documentation models each with the estimator named)
KNOWN = {"diabetes": "regression", "iris": "classification", "wine": "classification",
         "breast_cancer": "classification", "digits": "classification",
         "anes96": "classification", "spector": "classification",
         "modechoice": "classification", "cancer": "regression", "heart": "regression",
         "randhie": "regression", "stackloss": "regression", "longley": "regression",
         "committee": "regression", "cpunish": "regression", "strikes": "regression"}


def tables():
    from sklearn import datasets
    for name in ("diabetes", "iris", "wine", "breast_cancer", "digits"):
        yield name, getattr(datasets, f"load_{name}")().target
    try:
        import statsmodels.api as sm
    except ImportError:
        return
    for name in sorted(dir(sm.datasets)):
        loader = getattr(getattr(sm.datasets, name), "load_pandas", None)
        if loader is None:
            continue
        try:
            endog = getattr(loader(), "endog", None)
        except Exception:  # a table that needs a download
            continue
        y = None if endog is None else np.asarray(endog)
        if y is not None and y.ndim == 2 and y.shape[1] == 1:
            y = y[:, 0]
        if y is not None and y.ndim == 1:
            yield name, y


def main():
    warnings.filterwarnings("ignore")
    print(f"{'table':<15} {'rows':>6} {'distinct':>8}  {'known':<15} chosen")
    for name, y in tables():
        task, why = choose_task(y)
        known = KNOWN.get(name, "?")
        mark = "" if known in ("?", task) else "   <- differs"
        print(f"{name:<15} {len(y):>6} {len(np.unique(y)):>8}  {known:<15} {task}{mark}")


if __name__ == "__main__":
    main()
