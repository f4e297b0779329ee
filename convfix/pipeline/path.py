"""The one data path for a call the fast check could not clear, or that TensorFlow
refused after the fast check cleared it:

    bind -> guard -> policies (in order) -> dispatch -> recovery -> events

Everything here runs off the hot path. A bug in convfix never breaks a call TensorFlow
could have answered: it falls back to the original call (once) and logs
``convfix.internal_error``; where the call is unsafe to dispatch, ConvFixError instead.
A repair that TensorFlow still rejects re-raises TensorFlow's error for the call as made.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

import tensorflow as tf

from convfix import events, guard, runtime
from convfix.call import Binder, Call
from convfix.config import Config
from convfix.errors import ConvFixError
from convfix.events.callsite import user_callsite
from convfix.geometry import static_shape
from convfix.guard import graph_checks, placement, rules
from convfix.guard.answers import empty_result, output_shape
from convfix.guard.build import Build
from convfix.memory import Memory, Plan, ReplayTable, Step, call_key
from convfix.pipeline import recovery
from convfix.pipeline.decide import Verdict, decide, mode_of
from convfix.pipeline.messages import refusal, strict_message
from convfix.policies import Policy, Problem, Repair, build, rank

_MAX_STEPS = 8  # each repair removes one problem; more steps than policies means a loop


@dataclass(frozen=True, slots=True)
class Target:
    """One wrapped function: its original, how to bind its arguments, what is remembered
    (its replays: the memory's plans for this op), and how to name the Keras layer calling
    (the integration's: the pipeline knows no Keras)."""

    original: Callable[..., Any]
    binder: Binder
    build: Build
    memory: Memory
    layer_name: Callable[[], str | None]
    replays: ReplayTable

    def send_one(self, call: Call) -> Any:
        """One call on TensorFlow, by its bound arguments, nothing else."""
        return self.binder.dispatch(self.original, call)


@dataclass(frozen=True, slots=True)
class _Run:
    """One call on its way through the pipeline."""

    target: Target
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    call: Call
    config: Config
    policies: Mapping[str, Policy]
    tf_error: Exception | None  # TensorFlow's error, when recovering from one

    def original(self) -> Any:
        """The call exactly as the user made it (raises TF's error if we already have it)."""
        if self.tf_error is not None:
            raise self.tf_error
        return self.target.original(*self.args, **self.kwargs)

    def send(
        self,
        call: Call | None = None,
        dispatch: Callable[[], Any] | None = None,
        tried: int | None = None,
    ) -> Any:
        """Run ``call`` (default: the call as made) on TensorFlow: eagerly through
        recovery, which knows what out-of-memory or cuDNN failures taught it. ``tried``:
        ``dispatch`` runs the call in chunks of that size (a budget's)."""
        call = call or self.call
        dispatch = dispatch or self.original
        if call.graph:
            return dispatch()
        return recovery.send(
            call,
            self.target.send_one,
            dispatch,
            call.layer,
            self.learned,
            self.target.memory,
            tried,
        )

    def learned(self) -> None:
        """A recovery was remembered: later calls with inputs like this one take the slow
        path, where it is replayed, rather than failing in TensorFlow first."""
        dims = static_shape(self.call.input)
        if dims:
            self.target.memory.route(tuple(dims[1:]))

    def mode(self, problem: Problem) -> str:
        return mode_of(self.config, problem.owner)


class _Bug(Exception):
    """A convfix bug caught before dispatch, with what the guard knew about safety."""

    def __init__(self, bug: Exception, safe: bool) -> None:
        super().__init__(str(bug))
        self.bug, self.safe = bug, safe


@functools.lru_cache(maxsize=32)  # configs are frozen and hashable; overrides make new ones
def policies_for(config: Config) -> dict[str, Policy]:
    return build(config)


def find_problems(call: Call, policies: Mapping[str, Policy], build: Build) -> list[Problem]:
    """Every problem of ``call`` the guard and the policies see, in run order."""
    problems = guard.inspect(call, build)
    for policy in policies.values():
        found = policy.detect(call)
        if found is not None:
            problems.append(found)
    return sorted(problems, key=rank)


def _start(
    target: Target,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    tf_error: Exception | None,
    plan: Plan | None = None,
) -> _Run:
    config = runtime.config()
    call = target.binder.bind(args, kwargs)
    # The Keras layer (for events) costs ~10 us to look up: a replay takes the plan's.
    layer = plan.layer if plan is not None else target.layer_name()
    call = replace(call, graph=not tf.executing_eagerly(), layer=layer)
    if placement.needed(call, target.build):  # only a channels-first call's rule reads it
        call = replace(call, placement=placement.where())
    return _Run(target, args, kwargs, call, config, policies_for(config), tf_error)


def _detect(run: _Run) -> list[Problem]:
    return find_problems(run.call, run.policies, run.target.build)


def handle(target: Target, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """A call the fast check could not clear: replay what was learned for its signature,
    or check it in full, then run it."""
    key = call_key(args, kwargs) if tf.executing_eagerly() else None
    plan = target.replays.get(key, runtime.config())
    if plan is not None:
        return _replay(target, args, kwargs, plan)
    try:
        run = _start(target, args, kwargs, None)
        problems = _detect(run)
    except Exception as bug:  # convfix's own bug: the guard could not class the call
        safe = _plainly_safe(target, args, kwargs)
        return _fall_back(lambda: target.original(*args, **kwargs), bug, safe)
    if not problems:
        target.replays.put(key, Plan(run.config, (), run.call.layer))
        return _checked(run, run.call, run.send)
    return _resolve(run, problems, key)


def recover(target: Target, args: tuple[Any, ...], kwargs: dict[str, Any], error: Exception) -> Any:
    """TensorFlow raised on a call the fast check cleared: a policy may claim the error
    (a dtype mismatch, a padding name in lower case...); otherwise TF's error stands."""
    key = call_key(args, kwargs) if tf.executing_eagerly() else None
    if recovery.claims(error):  # out of memory or cuDNN: the arguments were fine
        try:
            run = _start(target, args, kwargs, None)
        except Exception:
            raise error from None
        return recovery.recover(
            run.call, target.send_one, error, run.call.layer, run.learned, target.memory
        )
    try:
        run = _start(target, args, kwargs, error)
        problems = _detect(run)
    except Exception:
        problems = []  # cannot analyse the call: TensorFlow's own error stands
    if not problems:
        raise error
    result = _resolve(run, problems, key)
    target.memory.flag(run.call.filter)  # later calls go to the replay, not to TF first
    return result


def _replay(target: Target, args: tuple[Any, ...], kwargs: dict[str, Any], plan: Plan) -> Any:
    if plan.steps is not None and not len(
        target.memory.learned
    ):  # learned recoveries need the full path
        try:
            return _replay_steps(target, args, kwargs, plan, plan.steps)
        except Exception:  # TensorFlow or a rewrite failed: the full path says why
            pass
    try:
        run = _start(target, args, kwargs, None, plan)
    except Exception as bug:
        safe = _plainly_safe(target, args, kwargs)
        return _fall_back(lambda: target.original(*args, **kwargs), bug, safe)
    if not plan.problems:
        return run.send()
    return _resolve(run, list(plan.problems), None, redetect=False)


def _replay_steps(
    target: Target,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    plan: Plan,
    steps: tuple[Step, ...],
) -> Any:
    """A remembered plan whose repairs are all argument rewrites: no binding, no checks."""
    for step in steps:
        assert step.repair.rewrites is not None
        args, kwargs = target.binder.rewrite(args, kwargs, step.repair.rewrites)
    result = target.original(*args, **kwargs)
    for step in reversed(steps):
        if step.repair.finish is not None:
            result = step.repair.finish(result)
    op = target.binder.spec.name
    for step in steps:
        events.report(
            events.INTERVENTION, policy=step.problem.owner, op=op, reason=step.problem.reason,
            mode=step.mode, action=step.repair.action, before=step.problem.before,
            after=step.repair.after, graph=False, layer=plan.layer,
        )  # fmt: skip
    return result


def _resolve(
    run: _Run, problems: list[Problem], key: tuple[Any, ...] | None, redetect: bool = True
) -> Any:
    handled: list[Problem] = []
    repairs: list[tuple[Problem, Repair]] = []
    try:
        if any(decide(run.mode(p)) is Verdict.REFUSE for p in problems):
            _raise_strict(run, problems)
        result = _repair_and_run(run, problems, handled, redetect, repairs)
    except _Bug as wrapped:
        safe = wrapped.safe or run.tf_error is not None  # TF already answered: its error
        return _fall_back(run.original, wrapped.bug, safe)
    except ConvFixError as refused:
        # A refusal leaves a trace too: one folded event per problem it names (strict mode
        # names them all), callsite and reason.
        _locate(refused)
        named = getattr(refused, "problems", None) or [getattr(refused, "problem", problems[0])]
        for problem in named:
            _record(
                events.REFUSED, run.call, problem, run.mode(problem), "refuse", {},
                level="error", callsite=refused.callsite,
            )  # fmt: skip
        raise
    steps = None
    if (
        run.target.binder.can_rewrite
        and len(repairs) == len(handled)
        and all(r.rewrites is not None for _, r in repairs)
    ):
        steps = tuple(Step(p, run.mode(p), r) for p, r in repairs)
    run.target.replays.put(key, Plan(run.config, tuple(handled), run.call.layer, steps))
    return result


def _repair_and_run(
    run: _Run,
    problems: list[Problem],
    handled_log: list[Problem],
    redetect: bool,
    repairs: list[tuple[Problem, Repair]],
) -> Any:
    safe = not any(p.dangerous for p in problems)
    handled: set[str] = set()
    current = run.call
    try:
        for _ in range(_MAX_STEPS):
            pending = [p for p in problems if p.reason not in handled]
            if not pending:
                break
            problem = pending[0]
            handled.add(problem.reason)
            handled_log.append(problem)
            policy = run.policies.get(problem.owner)
            mode = run.mode(problem)
            if problem.reason == "empty_input":
                return _answer_empty(current, problem, mode, repairs)
            verdict = decide(mode, can_act=policy is not None)
            if verdict is Verdict.REFUSE:
                # Strict, yet past the strict check of the call as made: a problem an
                # earlier repair revealed. It is finished like the others (as it always was).
                verdict = Verdict.REPAIR if policy is not None else Verdict.LEAVE
            if verdict is not Verdict.REPAIR or policy is None:
                if verdict is Verdict.WARN:
                    _record(events.WARNING, current, problem, mode, "none", {})
                if problem.unsafe:
                    raise refusal(current, problem, policy, mode)
                continue
            try:
                repair = policy.apply(current, problem)
            except ConvFixError as refused:  # the refusal event names this policy
                if getattr(refused, "problem", None) is None:
                    refused.problem = problem  # type: ignore[attr-defined]
                raise
            repairs.append((problem, repair))
            current = repair.call
            if redetect:
                problems = find_problems(current, run.policies, run.target.build)
    except ConvFixError:
        raise
    except Exception as bug:
        raise _Bug(bug, safe) from bug
    return _dispatch(run, current, repairs, safe)


def _dispatch(run: _Run, current: Call, repairs: list[tuple[Problem, Repair]], safe: bool) -> Any:
    if not repairs:
        return _checked(run, run.call, run.send)
    runner = next((r for _, r in repairs if r.run is not None), None)
    send_one = run.target.send_one
    tried = None
    if runner is None or runner.run is None:
        dispatch: Callable[[], Any] = functools.partial(send_one, current)
    else:  # a repair runs the call its own way (split_batch's chunks)
        dispatch = functools.partial(runner.run, send_one)
        tried = runner.after.get("chunk")
    try:
        result = _checked(run, current, lambda: run.send(current, dispatch, tried))
    except Exception as error:
        for problem, repair in repairs:
            _record(
                events.INTERVENTION, run.call, problem, run.mode(problem), repair.action,
                repair.after, outcome="fix_failed", error_type=type(error).__name__,
            )  # fmt: skip
        if safe and not recovery.claims(error):  # TF's own error for the call as made
            return run.original()
        raise
    for problem, repair in reversed(repairs):
        if repair.finish is not None:
            try:
                result = repair.finish(result)
            except Exception as bug:
                raise ConvFixError(
                    f"convfix: {run.call.spec.name}: finishing the {problem.owner} repair "
                    "failed (a convfix bug; please report it)"
                ) from bug
    for problem, repair in repairs:
        _record(
            events.INTERVENTION, run.call, problem, run.mode(problem), repair.action, repair.after
        )
    return result


def _checked(run: _Run, call: Call, dispatch: Callable[[], Any]) -> Any:
    """Dispatch, with the one run-time check a traced call needs where static shapes
    cannot prove it safe (a repaired call included: repairs keep unknown sizes unknown)."""
    if graph_checks.needed(call, run.target.build):
        return graph_checks.dispatch_checked(call, dispatch)
    return dispatch()


def _answer_empty(
    call: Call, problem: Problem, mode: str, repairs: list[tuple[Problem, Repair]]
) -> Any:
    shape = output_shape(call)
    if shape is None:
        raise refusal(call, problem, None, mode)
    result = empty_result(call, shape)
    for _, repair in reversed(repairs):  # the answer is the repaired call's: undo as dispatch does
        if repair.finish is not None:
            result = repair.finish(result)
    for earlier, repair in repairs:
        _record(events.INTERVENTION, call, earlier, mode, repair.action, repair.after)
    _record(events.INTERVENTION, call, problem, mode, "answer_empty", {"output_shape": shape})
    return result


def _raise_strict(run: _Run, problems: list[Problem]) -> None:
    error = ConvFixError(strict_message(run.call, problems, run.policies))
    error.problems = problems  # type: ignore[attr-defined]  # one refusal event each
    if any(p.unsafe or not p.probe for p in problems):
        raise error
    try:  # TensorFlow answers this call itself: chain its own error to ours
        run.original()
    except Exception as tf_error:
        raise error from tf_error
    raise error


def _locate(error: ConvFixError) -> None:
    """End the message with the user's callsite (once): inside tf.function the traceback
    shows AutoGraph's generated file. In ``args`` rather than ``__str__``, because Keras 3
    re-creates a layer's error from ``args[0]``."""
    if error.callsite is not None:
        return
    error.callsite = user_callsite()
    if error.callsite is not None and error.args:
        error.args = (f"{error.args[0]}\nCalled from {error.callsite}", *error.args[1:])


def _fall_back(original: Callable[[], Any], bug: Exception, safe: bool) -> Any:
    events.emit(
        events.INTERNAL_ERROR,
        level="error",
        error_type=type(bug).__name__,
        error=str(bug)[:200],
        fell_back=safe,
    )
    if not safe:
        error = ConvFixError(
            "convfix: an internal error stopped the checks on a call TensorFlow may crash "
            "on, so it was not run (a convfix bug; please report it with the event log)"
        )
        _locate(error)
        raise error from bug
    return original()


def _plainly_safe(target: Target, args: tuple[Any, ...], kwargs: dict[str, Any]) -> bool:
    """Safety judged without the guard, which may be what failed (rules.plainly_safe)."""
    try:
        return rules.plainly_safe(target.binder.bind(args, kwargs), target.build)
    except Exception:
        return False


def _record(
    event: str,
    call: Call,
    problem: Problem,
    mode: str,
    action: str,
    after: Mapping[str, Any],
    **fields: Any,
) -> None:
    events.report(
        event, policy=problem.owner, op=call.spec.name, reason=problem.reason, mode=mode,
        action=action, before=problem.before, after=after, graph=call.graph, layer=call.layer,
        **fields,
    )  # fmt: skip
