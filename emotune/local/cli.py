"""``emotune local ...``: run the whole product on this machine (no GPU, no internet, no containers)."""

from __future__ import annotations

import time
from pathlib import Path

import typer
from openai import OpenAI
from rich.console import Console

from emotune.local.demo import DemoOptions, run_demo
from emotune.local.supervisor import LocalStack
from emotune.models.basemodels import DEFAULT_BASE_MODEL

app = typer.Typer(help="Run every service as a local process (the embedded default).", no_args_is_help=True)
# soft_wrap: lines are not cut at the console width. On a terminal it wraps them itself; in a file (`| tee run.log`,
# where rich assumes 80 columns) the evaluation tables, samples and URLs stay one line each.
console = Console(soft_wrap=True)

StateDir = typer.Option(Path("var"), "--state-dir", envvar="EMOTUNE_STATE_DIR",
                        help="logs, pid files, the local artifact store and the API key")
PortOffset = typer.Option(0, "--port-offset", envvar="EMOTUNE_PORT_OFFSET",
                          help="added to every default port (run two stacks side by side)")
BaseModel = typer.Option(DEFAULT_BASE_MODEL, "--base-model", envvar="EMOTUNE_BASE_MODEL",
                         help="served base model and, without ZHIPUAI_API_KEY, the few-shot teacher")


def _stack(state_dir: Path, port_offset: int, base_model: str = DEFAULT_BASE_MODEL, ui: bool = True) -> LocalStack:
    return LocalStack(state_dir, base_model=base_model, port_offset=port_offset, with_ui=ui)


def _start(stack: LocalStack) -> None:
    started = time.monotonic()
    stack.start(lambda name, status: console.print(f"  {name:<10} {status}"))
    console.print(f"all services healthy in {time.monotonic() - started:.0f}s")


@app.command()
def up(state_dir: Path = StateDir, port_offset: int = PortOffset, base_model: str = BaseModel,
       ui: bool = typer.Option(True, help="also start the Streamlit UI")) -> None:
    """Start all services (idempotent) and leave them running."""
    stack = _stack(state_dir, port_offset, base_model, ui)
    _start(stack)
    _print_endpoints(stack)


@app.command()
def down(state_dir: Path = StateDir, port_offset: int = PortOffset) -> None:
    """Stop the services started by `up` or `demo`."""
    stopped = _stack(state_dir, port_offset).stop()
    console.print(f"stopped: {', '.join(stopped) or 'nothing was running'}")


@app.command()
def status(state_dir: Path = StateDir, port_offset: int = PortOffset) -> None:
    """Show which services are running and healthy."""
    for name, state in _stack(state_dir, port_offset).status().items():
        console.print(f"  {name:<10} {state}")


@app.command()
def demo(
    state_dir: Path = StateDir,
    port_offset: int = PortOffset,
    base_model: str = BaseModel,
    questions_per_style: int = typer.Option(DemoOptions.questions_per_style, help="seed questions generated per style"),
    eval_questions: int = typer.Option(DemoOptions.eval_questions,
                                       help="held-out questions per style for the evaluation (the gate needs 12)"),
    epochs: int = typer.Option(DemoOptions.epochs, help="training epochs"),
    method: str = typer.Option(DemoOptions.method, help="supervised (learn the kept teacher answers) or dpo "
                                                        "(prefer them over a rejected reply, --pairs-rejected)"),
    pairs_rejected: str = typer.Option(DemoOptions.pairs_rejected, help="dpo: the rejected reply — other_style "
                                       "(another style's answer to the question) or base_model (trigger only)"),
    nll_weight: float = typer.Option(-1.0, help="dpo: weight of the NLL on the chosen reply (-1 = the trainer's "
                                                "default)"),
    adapters: str = typer.Option(DemoOptions.adapters, help="per_style (one LoRA adapter per style) or shared "
                                 "(one adapter, the styles told apart by their triggers)"),
    best_of: int = typer.Option(0, help="teacher candidates per question (best-of-N; 0 = 3 offline, 1 with "
                                        "ZhipuAI)"),
    answers_per_question: int = typer.Option(DemoOptions.answers_per_question, help="teacher answers kept per "
                                             "question and style (every passing one; times --best-of candidates)"),
    learning_rate: float = typer.Option(0.0, help="0 = the method's default for this teacher"),
    seed: int = typer.Option(7, help="the job's seed (held-out split, sampling, LoRA initialisation)"),
    exit_after: bool = typer.Option(False, "--exit", help="stop the services when the job is done"),
    ui: bool = typer.Option(True, help="also start the Streamlit UI"),
) -> None:
    """The main job: start everything, fine-tune two styles end to end, print the evaluation."""
    started = time.monotonic()
    stack = _stack(state_dir, port_offset, base_model, ui)
    try:
        _start(stack)
        client = OpenAI(base_url=f"{stack.gateway_url}/v1", api_key=stack.api_key, max_retries=2, timeout=600)
        overrides = {"best_of": best_of} if best_of else {}
        if learning_rate:
            overrides["learning_rate"] = learning_rate
        if nll_weight >= 0:
            overrides["nll_weight"] = nll_weight
        outcome = run_demo(client, stack.gateway_url, stack.api_key, DemoOptions.for_teacher(
            base_model=base_model, questions_per_style=questions_per_style, eval_questions=eval_questions,
            epochs=epochs, seed=seed, method=method, pairs_rejected=pairs_rejected, adapters=adapters,
            answers_per_question=answers_per_question, **overrides), console)
    except BaseException:
        if exit_after:
            stack.stop()
        raise
    console.print(f"wall time: {time.monotonic() - started:.0f}s")
    job = outcome["job"]
    if exit_after:
        stack.stop()
    else:
        _print_endpoints(stack, job.fine_tuned_model)
    if job.status != "succeeded":
        raise typer.Exit(1)


def _print_endpoints(stack: LocalStack, model: str | None = None) -> None:
    console.rule("running")
    console.print(f"OpenAI-compatible API: {stack.gateway_url}/v1  (API key in {stack.state_dir / 'api-key'})")
    if stack.with_ui:
        console.print(f"UI: {stack.ui_url}")
    if model:
        console.print(f"try: emotune chat {model}:温柔 --gateway {stack.gateway_url} "
                      f"--api-key-file {stack.state_dir / 'api-key'}")
        console.print("or from an app (the official openai client):", markup=False)
        console.print(f'  OpenAI(base_url="{stack.gateway_url}/v1", api_key=open("{stack.state_dir / "api-key"}")'
                      f'.read().strip()).chat.completions.create(model="{model}:温柔", '
                      'messages=[{"role": "user", "content": "今天好累啊"}])', markup=False, soft_wrap=True)
    console.print("stop with: emotune local down")
