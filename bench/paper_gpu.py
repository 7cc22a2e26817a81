"""Time the tabular students' training iteration at the paper's batch size, for a GPU session.

`distill paper --scale paper` trains about 40 batched student runs of 30,000 iterations on 1000 MDPs; its
time is (iterations x seconds per iteration) summed over the runs, plus the exact evaluations. This times
``--iterations`` iterations (collect a segment, one Eq. 1 step) of one method at B = ``--mdps`` MDPs for each
``--actions`` size, with the device synchronised before and after, and the exact evaluation of the batch.
With ``--graph`` on CUDA it also captures the collector (static shapes, no host syncs) in a CUDA graph and
times its replay; the update itself cannot be captured while the trainer's ``segment_targets`` reads its KL
back to the host (``float(kl)``).

On a machine without a GPU it runs on the CPU as a smoke test: pass small sizes
(``--mdps 10 --iterations 5``); the CPU numbers say nothing about the GPU.

Usage: python bench/paper_gpu.py [--device cuda] [--mdps 1000] [--iterations 200] [--actions 4 4000]
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch

from distillcli.methods import get_method
from distillcli.studies.common import PaperOptions, grid_batch, q_rows, student_returns, teacher_and_optimal
from distillcli.studies.tabular import RowOptimizer, TabularCollector, TabularStudent, TabularTeacher, update

PAPER_ITERATIONS = 30_000


def synchronise(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def time_size(args: argparse.Namespace, n_actions: int) -> dict[str, object]:
    options = PaperOptions.at_scale("paper", mdps=args.mdps, device=args.device, teacher_steps=args.teacher_steps)
    batch = grid_batch(options, 0, 0, args.mdps, n_actions=n_actions)
    probs, _ = teacher_and_optimal(batch, q_rows(options, 0, 0, args.mdps), options.teacher_temperature)
    settings = options.settings(0)
    teacher = TabularTeacher(batch, probs, settings)
    method = get_method(args.method)
    student = TabularStudent(batch.n_mdps * batch.n_states, n_actions, batch.device)
    generator = torch.Generator(device=batch.device).manual_seed(0)
    collector = TabularCollector(batch, teacher, settings.envs, generator, method.control)
    optimizer = RowOptimizer("adam", [student.logits, student.values], [settings.lr, settings.critic_lr])

    def iterate(n: int) -> float:
        synchronise(args.device)
        started = time.perf_counter()
        for _ in range(n):
            update(method, collector.collect(settings.segment, student), student, optimizer, settings)
        synchronise(args.device)
        return time.perf_counter() - started

    iterate(args.warmup)
    seconds = iterate(args.iterations) / args.iterations
    synchronise(args.device)
    started = time.perf_counter()
    student_returns(batch, student)
    synchronise(args.device)
    evaluation = time.perf_counter() - started
    row: dict[str, object] = {
        "actions": n_actions,
        "mdps": args.mdps,
        "method": args.method,
        "seconds_per_iteration": seconds,
        "evaluation_seconds": evaluation,
        "hours_for_30k_iterations": seconds * PAPER_ITERATIONS / 3600,
    }
    if args.graph and args.device.startswith("cuda"):
        row |= _graph_collector(collector, student, settings.segment)
    return row


def _graph_collector(collector: TabularCollector, student: TabularStudent, steps: int) -> dict[str, object]:
    """Capture one segment's collection in a CUDA graph and time its replay."""
    try:
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            for _ in range(3):
                collector.collect(steps, student)
        torch.cuda.current_stream().wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            collector.collect(steps, student)
        torch.cuda.synchronize()
        started = time.perf_counter()
        for _ in range(100):
            graph.replay()
        torch.cuda.synchronize()
        return {"collector_graph_seconds": (time.perf_counter() - started) / 100}
    except Exception as error:  # report, do not fail: the timing above stands
        return {"collector_graph_error": f"{type(error).__name__}: {error}"[:300]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--mdps", type=int, default=1000)
    parser.add_argument("--iterations", type=int, default=200)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--actions", type=int, nargs="+", default=[4, 4000])
    parser.add_argument("--method", default="expected-entropy")
    parser.add_argument("--teacher-steps", type=int, default=2000, help="Q-learning steps (the timing needs a teacher)")
    parser.add_argument("--graph", action="store_true", help="also capture the collector in a CUDA graph")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=Path("bench/results/paper-gpu.json"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows = []
    for n_actions in args.actions:
        row = time_size(args, n_actions)
        print(json.dumps(row), flush=True)
        rows.append(row)
    device = torch.cuda.get_device_name() if args.device.startswith("cuda") else f"CPU ({platform.machine()})"
    report = {
        "command": "python bench/paper_gpu.py "
        + " ".join(f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items()),
        "device": device,
        "torch": torch.__version__,
        "smoke_test_only": not args.device.startswith("cuda"),
        "sizes": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
