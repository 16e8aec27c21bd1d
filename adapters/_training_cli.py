"""`trellis adapters train`: train a LoRA adapter and register it."""

from __future__ import annotations

import time
from pathlib import Path

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

console = Console(stderr=True)


def register_training_commands(adapters_app: typer.Typer) -> None:
    """Add ``train`` to the ``trellis adapters`` group."""

    @adapters_app.command("train")
    def train(
        data: Path = typer.Argument(..., help="JSONL rows of {prompt, completion}."),
        name: str = typer.Option(..., help="Adapter name."),
        output: Path | None = typer.Option(
            None, help="Adapter folder (default: <first adapter root>/NAME)."
        ),
        steps: int = typer.Option(200, help="Total optimizer steps (a rerun resumes)."),
        batch_size: int = typer.Option(8, help="Rows per step."),
        max_length: int = typer.Option(192, help="Tokens per row."),
        learning_rate: float = typer.Option(3e-4, help="AdamW learning rate."),
        rank: int = typer.Option(8, help="LoRA rank."),
        base_model: Path | None = typer.Option(None, help="Base model folder (default: prepared)."),
        description: str | None = typer.Option(None, help="What the adapter is for (router)."),
        example: list[str] = typer.Option([], help="Example request text (router); repeatable."),
        register: bool = typer.Option(True, help="Register the result in the adapter registry."),
        db: str | None = typer.Option(None, help="Database URL (default: the Trellis database)."),
    ) -> None:
        """Train a LoRA adapter on prompt/completion pairs (CPU or GPU), then register it."""
        from trellis.adapters._registry import AdapterRegistry, default_adapter_roots
        from trellis.adapters._training import TrainingConfig, load_examples, train_adapter

        target = output or default_adapter_roots()[0] / name
        config = TrainingConfig(
            name=name,
            output_dir=target,
            base_model_dir=base_model,
            max_steps=steps,
            batch_size=batch_size,
            max_length=max_length,
            learning_rate=learning_rate,
            rank=rank,
        )
        with Progress(
            TextColumn("[bold]training[/bold] {task.fields[name]}"),
            BarColumn(),
            TextColumn("step {task.completed}/{task.total} loss {task.fields[loss]:.3f}"),
            TimeRemainingColumn(),
            console=console,
        ) as bar:
            task = bar.add_task("train", total=steps, name=name, loss=float("nan"))
            started, first_step = time.perf_counter(), [0]

            def show(step: int, total: int, loss: float) -> None:
                bar.update(task, completed=step, loss=loss)
                first_step[0] = first_step[0] or step
                if not console.is_terminal and (step % 5 == 0 or step == total):
                    # Logs and CI have no live bar: print a line now and then instead.
                    rate = (time.perf_counter() - started) / (step - first_step[0] + 1)
                    console.print(f"step {step}/{total} loss {loss:.4f} ({rate:.1f} s/step)")

            report = train_adapter(config, data, progress=show)
        console.print(
            f"[green]trained[/green] {name}: {report.steps} steps "
            f"(resumed from {report.resumed_from}), rows train/eval {report.rows_train}/"
            f"{report.rows_eval}, truncated {report.rows_truncated}, dropped "
            f"{report.rows_dropped_empty + report.rows_dropped_too_long}, eval loss "
            f"{report.eval_loss}, exact match {report.eval_exact_match} -> {target}"
        )
        if not register:
            return
        registry = AdapterRegistry(db)
        examples = example or [row.prompt[-300:] for row in load_examples(data)[:3]]
        if name in registry:
            registry.remove(name)
        registry.add(
            name,
            target,
            description=description or f"LoRA adapter trained on {data.name}",
            examples=examples,
            tags=("trained",),
        )
        console.print(f"[green]registered[/green] {name}")
