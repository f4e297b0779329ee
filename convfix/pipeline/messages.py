"""The words of ConvFixError: what is wrong, what would fix it, and the TOML key."""

from __future__ import annotations

from collections.abc import Mapping

from convfix.call import Call, Problem
from convfix.errors import ConvFixError
from convfix.policies.base import Policy

_CONSEQUENCE = {
    "abort": "TensorFlow's oneDNN kernels abort the whole process on this call",
    "garbage": "TensorFlow would silently return a wrong result (wrong shape or values)",
    "answered": "TensorFlow rejects this call",
    "unclear": "TensorFlow rejects this call with an error that does not say why (with oneDNN: "
    '"could not create a primitive descriptor")',
}


def _fix(call: Call, problem: Problem, policy: Policy | None) -> str:
    return policy.describe(call, problem) if policy is not None else "repair it"


def _key(problem: Problem) -> str:
    return f'policies.{problem.owner}.mode = "fix"'


def refusal(call: Call, problem: Problem, policy: Policy | None, mode: str) -> ConvFixError:
    """The error for an unsafe call no enabled policy repairs (``mode``: the owner's)."""
    text = f"convfix refused {problem.message}. {_CONSEQUENCE[problem.hazard]}."
    if problem.owner != "guard" and mode != "fix":
        text += f" Set {_key(problem)} in your convfix config to {_fix(call, problem, policy)}."
    error = ConvFixError(text)
    error.problem = problem  # type: ignore[attr-defined]  # read by the refusal event
    return error


def strict_message(call: Call, problems: list[Problem], policies: Mapping[str, Policy]) -> str:
    """Strict mode: every problem found, each with the fix and the key that enables it."""
    lines = [f"convfix (strict) stopped {call.spec.name}: {len(problems)} problem(s) found"]
    for problem in problems:
        line = f"- {problem.reason}: {problem.message}."
        if problem.owner != "guard":
            line += f" Fix: {_fix(call, problem, policies.get(problem.owner))}; enable with "
            line += f"{_key(problem)}."
        else:
            line += f" {_CONSEQUENCE[problem.hazard]}; convfix's guard answers it in fix mode."
        lines.append(line)
    return "\n".join(lines)
