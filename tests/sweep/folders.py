"""Run folders written by hand, shaped like the ones effnet train leaves (for compare and sweep tests)."""

import json

BASE = {
    "train.batch_size": "8", "train.ema_decay": "0.9", "train.lr_init": "0.02", "train.model_dir": "%MODEL_DIR",
    "train.seed": "0", "train.stage_schedule": "'single'", "efficientnet.width": "0.25",
}


def make_run(folder, overrides=None, final=None, evals=(), header="", total_steps=4, sessions=1, rates=(100.0,)):
    """A run folder as effnet train leaves it: operative config, log.json (dllogger lines), report.json."""
    folder.mkdir(parents=True)
    bindings = {**BASE, **(overrides or {})}
    lines = [header, f"MODEL_DIR = {str(folder)!r}", ""]
    lines += [f"{k} = {v}" for k, v in sorted(bindings.items()) if v is not None]
    (folder / "operative_config.gin").write_text("\n".join(lines) + "\n")
    log = []
    for session in range(sessions):
        log.append({"type": "LOG", "step": "PARAMETER", "data": {"resumed_from": "x" if session else ""}, "elapsedtime": "0.5"})
        for rate in rates:
            log.append({"type": "LOG", "step": [1, 2], "data": {"loss": 2.0, "img_per_s": rate}, "elapsedtime": "5.0"})
    for epoch, (top1, ema_top1) in enumerate(evals, 1):
        data = {"val_top1": top1, "val_loss": 1.0 / epoch, "global_step": 2 * epoch}
        if ema_top1 is not None:
            data["val_ema_top1"] = ema_top1
        log.append({"type": "LOG", "step": [epoch], "data": data, "elapsedtime": str(10.0 * epoch)})
    (folder / "log.json").write_text("".join(f"DLLL {json.dumps(r)}\n" for r in log) + 'DLLL {"type": "LOG", "st')
    if final is not None:
        report = {"model": "m", "final": {"global_step": total_steps, "seconds": 3.0, **final},
                  "parameters": {"total_steps": total_steps}}
        (folder / "report.json").write_text(json.dumps(report))
    return folder
