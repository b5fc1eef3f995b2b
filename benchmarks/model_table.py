"""What a user picks a model by: per packaged model and task, i1 answers on 2 CPU cores.

    python benchmarks/model_table.py --models smollm2-135m qwen2.5-coder-0.5b qwen2.5-coder-1.5b \
        --tasks admissible_set bin_packing tsp_construct cvrp_construct --seeds 0 1 --n 16

Per (model, task): answers to the fixed task prompt (``aad_kit.prompts.i1_prompt``) on the
default engine, scored on the task's default setting in the sandbox. Columns: valid rate,
share of valid answers that restate the template (same normalised code, or the template's
score exactly), mean and best valid score against the template's, tokens per answer, share cut
at ``max_new_tokens``, wall time and valid algorithms per minute. ``--answer-format
idea-first`` asks in the kit's earlier format (an ``Idea:`` line, then the code) for the
before/after comparison of the prompt change. ``--reference-teacher NAME`` reads a model's
answers from a teacher database's shipped reference answers (timing from its manifest)
instead of sampling them again. ``--answers FILE`` keeps every answer with its status, score and
error message; each row counts its failures by exception (``top_errors``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

IDEA_FIRST = (
    "Answer in exactly this format:\n"
    "Idea: <one sentence describing your algorithm>\n"
    "```python\n"
    "<the complete Python function {signature_name}, with any imports it needs>\n"
    "```\n"
    "Use only numpy and the Python standard library's math, random, itertools, heapq and "
    "collections. Do not read or write files, print, or use the network."
)  # the kit's answer format before the code-first change (aad_kit/prompts.py docstring)


def machine() -> dict[str, Any]:
    from aad_kit.teacher import _machine

    return _machine()


def answers_from_reference(teacher_name: str, task: str) -> tuple[list[dict[str, Any]], float | None]:
    from aad_kit import teacher

    path = teacher.reference_path(teacher_name)
    recs = [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines() if x.strip()]
    recs = [r for r in recs if r.get("task") == task]
    timing = ((teacher.load_manifest(teacher_name).get("reference") or {}).get("timing") or {}).get(task)
    return recs, (timing or {}).get("seconds")


def teacher_manifest(name: str) -> dict[str, Any]:
    from aad_kit import teacher

    return teacher.load_manifest(name)


def sample_answers(sampler: Any, task: str, seeds: Sequence[int], n: int, max_new_tokens: int
                   ) -> tuple[list[dict[str, Any]], float]:
    from aad_kit.llm import GenerationConfig
    from aad_kit.prompts import i1_prompt

    out, t0 = [], time.perf_counter()
    for seed in seeds:
        cfg = GenerationConfig(temperature=0.8, top_p=0.95, max_new_tokens=max_new_tokens, seed=seed)
        for j, c in enumerate(sampler.sample([i1_prompt(task)], n, cfg)[0]):
            out.append({"text": c.text, "seed": seed, "sample": j, "finish_reason": c.finish_reason,
                        "completion_tokens": c.completion_tokens})
    return out, time.perf_counter() - t0


def score_answers(task: str, answers: Sequence[dict[str, Any]], sandbox: Any) -> dict[str, Any]:
    import numpy as np

    from aad_kit.code import code_hash
    from aad_kit.sandbox import evaluate
    from aad_kit.search.parsing import parse_answer
    from aad_kit.tasks import get_task

    t = get_task(task)
    setting = t.default_setting
    template = evaluate(t, t.template_program, setting, sandbox=sandbox)
    template_hash = code_hash(t.template_program)
    parsed = [parse_answer(a["text"], t) for a in answers]
    jobs = [(task, p.code, setting) for p in parsed if p.code is not None]
    results = iter(sandbox.evaluate_many(jobs)) if jobs else iter(())
    statuses: Counter[str] = Counter()
    errors: Counter[str] = Counter()
    scores, copies, same_score, scored = [], 0, 0, []
    for a, p in zip(answers, parsed, strict=True):
        record = {k: a.get(k) for k in ("seed", "sample", "finish_reason", "completion_tokens", "text")}
        if p.code is None:
            status = p.status_hint.value if p.status_hint else "missing_function"
            statuses[status] += 1
            scored.append({**record, "status": status, "score": None, "error": "", "code": None})
            continue
        r = next(results)
        statuses[r.status.value] += 1
        kind = error_kind(r.message) if not r.ok else ""
        if kind:
            errors[f"{r.status.value}: {kind}"] += 1
        if r.ok:
            scores.append(float(r.score))
            copies += code_hash(p.code) == template_hash
            same_score += float(r.score) == float(template.score)
        scored.append({**record, "status": r.status.value, "score": r.score, "error": r.message[:500],
                       "code": p.code})
    tokens = [a.get("completion_tokens") or 0 for a in answers]
    n = len(answers)
    return {
        "task": task, "setting": setting, "answers": n, "valid": len(scores),
        "valid_rate": len(scores) / n if n else float("nan"),
        "template_copies": copies, "template_score_share": same_score / len(scores) if scores else float("nan"),
        "mean_valid_score": float(np.mean(scores)) if scores else float("nan"),
        "best_valid_score": float(np.max(scores)) if scores else float("nan"),
        "template_score": float(template.score),
        "better_than_template": sum(s > template.score for s in scores),
        "tokens_per_answer": float(np.mean(tokens)) if tokens else float("nan"),
        "cut_share": sum(a.get("finish_reason") == "length" for a in answers) / n if n else float("nan"),
        "statuses": dict(statuses),
        "top_errors": dict(errors.most_common(5)),
        "scored_answers": scored,
    }


def error_kind(message: str) -> str:
    """The exception's name from a sandbox message ("TypeError: ..." -> "TypeError"), so that
    failures can be counted by kind; "" when the message names none."""
    head = (message or "").strip().split(":", 1)[0].strip()
    return head if head.isidentifier() else ""


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", nargs="+", default=["smollm2-135m", "qwen2.5-coder-0.5b", "qwen2.5-coder-1.5b"])
    ap.add_argument("--tasks", nargs="+", default=["admissible_set", "bin_packing", "tsp_construct", "cvrp_construct"])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--n", type=int, default=16, help="answers per seed")
    ap.add_argument("--max-new-tokens", type=int, default=1024)
    ap.add_argument("--parallel", type=int, default=16, help="sequences decoded together")
    ap.add_argument("--answer-format", choices=("code-first", "idea-first"), default="code-first")
    ap.add_argument("--reference-teacher", default=None,
                    help="read the answers of the teacher's model from this teacher database's reference")
    ap.add_argument("--json", default=None)
    ap.add_argument("--answers", default=None,
                    help="write every answer (text, parsed code, status, score, error) to this JSONL file, "
                         "so that the failures can be read")
    args = ap.parse_args(list(argv) if argv is not None else None)

    import aad_kit.prompts as prompts
    from aad_kit.llm import make_sampler
    from aad_kit.sandbox import Sandbox, SandboxConfig

    if args.answer_format == "idea-first":
        prompts.ANSWER_FORMAT = IDEA_FIRST
    rows = []
    with Sandbox(SandboxConfig(), cache=False) as sandbox:
        for model in args.models:
            ref = None
            if args.reference_teacher:
                from aad_kit.teacher import get_teacher

                ref = args.reference_teacher if get_teacher(args.reference_teacher).model == model else None
            sampler = None
            for task in args.tasks:
                answers, wall = answers_from_reference(ref, task) if ref else ([], None)
                if answers:
                    source = f"reference answers of {ref}"
                else:  # no reference for this model and task: sample now
                    sampler = sampler or make_sampler(model, batch_size=args.parallel)
                    answers, wall = sample_answers(sampler, task, args.seeds, args.n, args.max_new_tokens)
                    source = "sampled now"
                row = {"model": model, "engine": "reference" if source != "sampled now" else sampler.info().get("backend"),
                       **score_answers(task, answers, sandbox), "wall_s": wall, "source": source}
                row["valid_per_min"] = 60.0 * row["valid"] / wall if wall else float("nan")
                scored = row.pop("scored_answers")
                if args.answers:
                    with open(args.answers, "a", encoding="utf-8") as fh:
                        for a in scored:
                            fh.write(json.dumps({"model": model, "task": task, **a}) + "\n")
                row["max_new_tokens"] = (args.max_new_tokens if source == "sampled now" else
                                         ((teacher_manifest(ref).get("reference") or {}).get("sampling") or {})
                                         .get("max_new_tokens"))
                rows.append(row)
                print(json.dumps(row), flush=True)
            if sampler is not None and hasattr(sampler, "close"):
                sampler.close()
    cols = ["model", "task", "max_new_tokens", "answers", "valid_rate", "template_copies", "template_score_share",
            "mean_valid_score", "best_valid_score", "template_score", "better_than_template",
            "tokens_per_answer", "cut_share", "wall_s", "valid_per_min"]
    print("\n| " + " | ".join(cols) + " |\n|" + "---|" * len(cols))
    for r in rows:
        print("| " + " | ".join(f"{r[c]:.3g}" if isinstance(r[c], float) else str(r[c]) for c in cols) + " |")
    result = {"rows": rows, "machine": machine(), "args": vars(args), "answer_format": args.answer_format,
              "threads": os.environ.get("AAD_KIT_TORCH_THREADS")}
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2, default=str))
    return result


if __name__ == "__main__":
    main()
