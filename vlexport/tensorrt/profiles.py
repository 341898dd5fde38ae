"""TensorRT optimization profiles from an artifact's axis ranges (pure Python, no TensorRT).

A profile is `{input name: (min_shape, opt_shape, max_shape)}`: one entry per model input, each
shape a tuple of ints. TensorRT tunes kernels for `opt` and accepts any shape within
[min, max] per dimension; an engine may carry several profiles and the runtime picks one per call.

The rule (`strategy="auto"`):

* one profile when the batch axis is missing, fixed (min == max) or starts above 1: every axis
  spans its full range [min, max] and is tuned at its `opt`;
* two profiles when the batch range is [1, max] with max >= 2:
    0. latency:    batch 1..1 (opt 1), every other axis its full range at its opt;
    1. throughput: batch 2..max, opt = the batch axis's own opt when it is >= 2 (someone asked
       for it), otherwise max (the full batches this profile exists for); other axes as above.
  The two profiles cover exactly the declared ranges, without overlap, so each shape has one
  home and a batch-1 request never runs kernels tuned for a large batch.

`strategy="single"` forces one profile. Profiles are listed tightest first, and
`select_profile` returns the first one that contains the given shapes.
"""

from __future__ import annotations

from vlexport.errors import ConfigError, InputError
from vlexport.specs import AxisRange

Shape = tuple
Profile = dict  # {input name: (min_shape, opt_shape, max_shape)}

STRATEGIES = ("auto", "single")


def _as_range(name, value) -> AxisRange:
    if isinstance(value, AxisRange):
        return value
    try:
        lo, opt, hi = (int(v) for v in list(value)[:3])
    except (TypeError, ValueError):
        raise ConfigError(f"axis '{name}' needs [min, opt, max], got {value!r}") from None
    try:
        return AxisRange(lo, opt, hi)
    except ValueError as exc:
        raise ConfigError(f"axis '{name}': {exc}") from None


def _input_dims(inputs) -> dict[str, tuple]:
    """{name: dims} from InputSpec objects or manifest dicts, in order."""
    out = {}
    for spec in inputs:
        name = spec["name"] if isinstance(spec, dict) else spec.name
        dims = spec["dims"] if isinstance(spec, dict) else spec.dims
        out[name] = tuple(dims)
    return out


def _shape(dims, axes, pick) -> Shape:
    """Concrete shape of `dims`; a derived dim ("past+1") is the sum of its terms' picks."""
    out = []
    for d in dims:
        if isinstance(d, int):
            out.append(int(d))
        else:
            out.append(sum(int(t) if t.isdigit() else int(pick(t, axes[t])) for t in d.split("+")))
    return tuple(out)


def build_profiles(inputs, axes, strategy: str = "auto") -> list[Profile]:
    """Optimization profiles for `inputs` (InputSpecs or manifest input dicts) over `axes`
    ({axis: AxisRange or [min, opt, max]}). See the module docstring for the rule."""
    if strategy not in STRATEGIES:
        raise ConfigError(f"unknown profile strategy '{strategy}'; choose one of {list(STRATEGIES)}")
    ranges = {k: _as_range(k, v) for k, v in axes.items()}
    dims = _input_dims(inputs)
    if not dims:
        raise ConfigError("cannot make optimization profiles for a model without inputs")
    for name, ds in dims.items():
        for d in ds:
            missing = [t for t in (d.split("+") if isinstance(d, str) else []) if not t.isdigit() and t not in ranges]
            if missing:
                raise ConfigError(f"input '{name}' uses axis '{missing[0]}' ({ds}), which has no range; "
                                  f"known axes: {sorted(ranges)}")
            if not isinstance(d, (str, int)):
                raise ConfigError(f"input '{name}' has a dimension {d!r} that is neither an axis name nor an int")

    def make(overrides: dict[str, AxisRange]) -> Profile:
        table = {**ranges, **overrides}
        return {name: (_shape(ds, table, lambda a, r: r.min),
                       _shape(ds, table, lambda a, r: r.opt),
                       _shape(ds, table, lambda a, r: r.max)) for name, ds in dims.items()}

    batch = ranges.get("batch")
    used = {t for ds in dims.values() for d in ds if isinstance(d, str) for t in d.split("+")}
    if strategy == "single" or batch is None or "batch" not in used or batch.min != 1 or batch.max < 2:
        return [make({})]
    throughput_opt = batch.opt if batch.opt >= 2 else batch.max
    return [make({"batch": AxisRange(1, 1, 1)}),
            make({"batch": AxisRange(2, throughput_opt, batch.max)})]


def profiles_from_manifest(manifest: dict, graph: str = "model", strategy: str = "auto") -> list[Profile]:
    """`build_profiles` on one graph of a (format 2) manifest: its "inputs" and the axes they use."""
    inputs = manifest["graphs"][graph]["inputs"]
    used = {t for i in inputs for d in i["dims"] if isinstance(d, str) for t in d.split("+")}
    axes = {k: v for k, v in manifest["axes"].items() if k in used}
    return build_profiles(inputs, axes, strategy)


def profiles_to_json(profiles) -> list[dict]:
    """[{name: [[min...], [opt...], [max...]]}] for the manifest."""
    return [{name: [list(s) for s in mom] for name, mom in p.items()} for p in profiles]


def profiles_from_json(data) -> list[Profile]:
    return [{name: tuple(tuple(int(v) for v in s) for s in mom) for name, mom in p.items()} for p in data]


def _violations(profile: Profile, shapes: dict, dims: dict) -> list[tuple]:
    """[(input, dim index, axis label, value, lo, hi)] where `shapes` falls outside `profile`."""
    bad = []
    for name, shape in shapes.items():
        if name not in profile:
            continue
        lo, _, hi = profile[name]
        shape = tuple(int(v) for v in shape)
        if len(shape) != len(lo):
            raise InputError(f"input '{name}' should have {len(lo)} dims"
                             + (f" {tuple(dims[name])}" if name in dims else "") + f", got shape {shape}")
        for i, (n, a, b) in enumerate(zip(shape, lo, hi)):
            if not a <= n <= b:
                ds = dims.get(name)
                label = ds[i] if ds is not None and i < len(ds) and isinstance(ds[i], str) else f"dim {i}"
                bad.append((name, i, label, n, a, b))
    return bad


def select_profile(profiles, shapes: dict, dims: dict | None = None) -> int:
    """Index of the first (tightest) profile containing every given input shape.

    shapes: {input name: shape}; inputs a profile does not list are ignored. dims: optional
    {input name: dims} (axis names) so errors name the axis. Raises InputError naming the input,
    the axis, the value and what the engine accepts when no profile fits.
    """
    if not profiles:
        raise InputError("this engine has no optimization profiles")
    dims = {k: tuple(v) for k, v in (dims or {}).items()}
    results = [_violations(p, shapes, dims) for p in profiles]
    for i, bad in enumerate(results):
        if not bad:
            return i
    # Outside the union of all profiles on some dimension: say what the engine accepts at all.
    for name, shape in shapes.items():
        present = [p[name] for p in profiles if name in p]
        if not present:
            continue
        for i, n in enumerate(int(v) for v in shape):
            lo = min(m[0][i] for m in present)
            hi = max(m[2][i] for m in present)
            if not lo <= n <= hi:
                ds = dims.get(name)
                label = ds[i] if ds is not None and i < len(ds) and isinstance(ds[i], str) else f"dim {i}"
                raise InputError(
                    f"input '{name}' has {label}={n} (shape {tuple(int(v) for v in shape)}), outside every optimization "
                    f"profile of this TensorRT engine: it accepts {label} in [{lo}, {hi}]; rebuild the engine "
                    f"with a wider range" + (f" (e.g. --max-{label.replace('_', '-')})" if not label.startswith("dim ") else ""))
    # Every dimension is somewhere in range, but no single profile takes the combination.
    best = min(range(len(results)), key=lambda k: len(results[k]))
    detail = "; ".join(f"input '{n}' has {lab}={v}, profile {best} takes [{a}, {b}]"
                       for n, _, lab, v, a, b in results[best])
    raise InputError(f"no optimization profile of this TensorRT engine accepts these input shapes together: {detail}")


def profile_ranges_text(profiles) -> str:
    """A short human description, e.g. for logs: 'profile 0: input_ids 1x2..1x512 (opt 1x20), ...'."""
    parts = []
    for i, p in enumerate(profiles):
        items = ", ".join(f"{n} {'x'.join(map(str, lo))}..{'x'.join(map(str, hi))} (opt {'x'.join(map(str, opt))})"
                          for n, (lo, opt, hi) in p.items())
        parts.append(f"profile {i}: {items}")
    return "; ".join(parts)
