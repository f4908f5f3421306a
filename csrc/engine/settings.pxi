# The engine's tuning settings in one place, for tests and benchmarks: each is declared
# (with why it has its value) beside the code that reads it; tuning() reads them all and
# tune() changes some. Tests change them only through the fixture `tuned`
# (tests/conftest.py), which restores them after every test.

_SETTINGS = ("grain_flops", "small_wake_flops", "grid_rows", "team_cap", "stretch_s",
             "judge_s", "helping", "help_grace", "help_pin")


def tuning():
    """The current settings, by name:
    grain_flops: the least matrix-product work per thread and step (plan_threads);
    small_wake_flops: the work from which a small predict splits even while the team's
        workers sleep (0: every split predict wakes them);
    grid_rows: every Dense layer's grid forced to this many rows where the plan's blocks
        divide so (0: dense_grid's rule);
    team_cap: at most this many threads run a team job (0: no cap), so a plan runs on
        fewer threads than it has blocks, as on a busy machine;
    stretch_s, judge_s: the length adapting training aims its stretches at, and the
        shortest it judges;
    helping: when adapting training runs a lead with helpers (0 never, 1 in place of one
        thread alone, 2 always); help_grace: the lead computes a helper's tile again after
        this many times its own tile's time (negative: the helpers take every tile but the
        lead's, and it waits for them); help_pin: a helped stretch keeps the lead on one
        CPU and its helpers off it."""
    return {"grain_flops": GRAIN_FLOPS, "small_wake_flops": SMALL_WAKE_FLOPS,
            "grid_rows": GRID_ROWS_FORCED, "team_cap": TEAM_CAP, "stretch_s": STRETCH_S,
            "judge_s": JUDGE_S, "helping": HELPING, "help_grace": HELP_GRACE,
            "help_pin": bool(fastnn_help_pin)}


def tune(**changes):
    """Change the named settings (see tuning()); returns what they were before, so
    tune(**old) restores them. Nothing changes if a name or value is bad."""
    global GRAIN_FLOPS, SMALL_WAKE_FLOPS, GRID_ROWS_FORCED, TEAM_CAP, STRETCH_S, JUDGE_S
    global HELPING, HELP_GRACE, fastnn_help_pin
    unknown = sorted(set(changes) - set(_SETTINGS))
    if unknown:
        raise ValueError(f"unknown engine settings {unknown}; known: {list(_SETTINGS)}")
    if "grain_flops" in changes and not changes["grain_flops"] > 0:
        raise ValueError(f"grain_flops must be positive, got {changes['grain_flops']}")
    for name in ("grid_rows", "team_cap", "small_wake_flops"):
        if name in changes and not changes[name] >= 0:
            raise ValueError(f"{name} must be at least 0, got {changes[name]}")
    if "helping" in changes and changes["helping"] not in (0, 1, 2):
        raise ValueError(f"helping must be 0, 1 or 2, got {changes['helping']}")
    before = tuning()
    old = {name: before[name] for name in changes}
    for name, value in changes.items():
        if name == "grain_flops":
            GRAIN_FLOPS = value
        elif name == "small_wake_flops":
            SMALL_WAKE_FLOPS = value
        elif name == "grid_rows":
            GRID_ROWS_FORCED = value
        elif name == "team_cap":
            TEAM_CAP = value
        elif name == "stretch_s":
            STRETCH_S = value
        elif name == "judge_s":
            JUDGE_S = value
        elif name == "helping":
            HELPING = value
        elif name == "help_grace":
            HELP_GRACE = value
        else:
            fastnn_help_pin = bool(value)
    return old
