"""Reading TensorBoard event files in tests (tensorboard's own reader, no mtl_tf)."""

from pathlib import Path

from tensorboard.backend.event_processing import event_accumulator


def scalars(log_dir) -> dict[str, list[tuple[int, float]]]:
    """{tag: [(step, value), ...]} of every scalar in the event files under `log_dir` (recursively)."""
    out: dict[str, list[tuple[int, float]]] = {}
    files = sorted(Path(log_dir).glob("events.out.tfevents.*"))
    if not files:
        raise FileNotFoundError(f"no TensorBoard event file in {log_dir}")
    accumulator = event_accumulator.EventAccumulator(str(log_dir), size_guidance={event_accumulator.TENSORS: 0, event_accumulator.SCALARS: 0})
    accumulator.Reload()
    tags = accumulator.Tags()
    for tag in tags.get("tensors", []):
        out[tag] = [(e.step, float(_value(e.tensor_proto))) for e in accumulator.Tensors(tag)]
    for tag in tags.get("scalars", []):
        out[tag] = [(e.step, float(e.value)) for e in accumulator.Scalars(tag)]
    return out


def _value(tensor_proto):
    from tensorboard.util import tensor_util

    return tensor_util.make_ndarray(tensor_proto).item()
