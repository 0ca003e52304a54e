"""``dream3d prior ...``: the bundled shapes-world prior (where it is; rebuild and evaluate it)."""

from __future__ import annotations


def register(sub) -> None:
    p = sub.add_parser("prior", help="the bundled shapes-world priors (text and view): path, train, eval")
    psub = p.add_subparsers(dest="prior_command", metavar="ACTION", required=True)
    path = psub.add_parser("path", help="print the folder of a bundled prior")
    path.add_argument("--kind", default="text", help="which prior: text (default) or view")
    path.set_defaults(func=run_path)

    train = psub.add_parser(
        "train",
        help="train the prior from scratch (seeded, checkpointed, resumable)",
        description="Render the shapes world, train VAE then text encoder + UNet, save in diffusers layout.",
    )
    train.add_argument(
        "-o", "--output", required=True, help="output folder (model files; training state in OUTPUT/train)"
    )
    train.add_argument("--kind", default="text", help="which prior: text (the text-to-image prior, default) or view")
    train.add_argument(
        "--config", default=None, help="YAML file of PriorTrainConfig (--kind view: ViewPriorTrainConfig) fields"
    )
    train.add_argument("--resume", action="store_true", help="continue the run in OUTPUT from its checkpoints")
    train.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, e.g. unet_steps=2000")
    train.set_defaults(func=run_train)

    ev = psub.add_parser(
        "eval",
        help="sample every object from four views and score colour, shape and view",
        description="Scores a model with a classifier trained on ground-truth renders; writes eval.json and samples.png.",
    )
    ev.add_argument("-o", "--output", default="outputs/prior-eval")
    ev.add_argument(
        "--kind", default="text", help="which prior: text (default) or view (novel views, held-out cameras)"
    )
    ev.add_argument("--model", default=None, help="model to score (default: the bundled prior of that kind)")
    ev.add_argument("--config", default=None, help="YAML file of PriorEvalConfig (--kind view: ViewEvalConfig) fields")
    ev.add_argument("overrides", nargs="*", metavar="key=value", help="e.g. samples_per_prompt=4 objects=10")
    ev.set_defaults(func=run_eval)


def run_path(args) -> int:
    from ..diffusion.loading import resolve_model

    check_kind(args.kind)
    print(
        resolve_model(
            "shapes-view" if args.kind == "view" else "shapes", layout="view" if args.kind == "view" else "sd"
        )
    )
    return 0


KINDS = ("text", "view")


def check_kind(kind: str) -> None:
    from ..errors import UserError

    if kind not in KINDS:
        raise UserError(f"unknown prior kind '{kind}'; use --kind text or --kind view")


def run_train(args) -> int:
    from ..config import load_config

    check_kind(args.kind)
    if args.kind == "view":
        from ..prior.view_train import ViewPriorTrainConfig, train_view_prior

        cfg = load_config(ViewPriorTrainConfig, args.config, args.overrides)
        record = train_view_prior(cfg, args.output, resume=args.resume)
        stage = record["stages"]["view"]
        print(
            f"view prior written to {args.output}/ in {record['seconds_total']:.0f} s ({record['bundle_mb']} MiB): "
            f"loss {stage['final_loss']:.4f}; details in {args.output}/train/train.json"
        )
        return 0
    from ..prior.train import PriorTrainConfig, train_prior

    cfg = load_config(PriorTrainConfig, args.config, args.overrides)
    record = train_prior(cfg, args.output, resume=args.resume)
    vae, unet = record["stages"]["vae"], record["stages"]["unet"]
    vae_note = f"VAE {vae['psnr_db']} dB" if "psnr_db" in vae else f"VAE of {vae['from']}"
    print(
        f"prior written to {args.output}/ in {record['seconds_total']:.0f} s: {vae_note}, "
        f"UNet loss {unet['final_loss']:.4f}; details in {args.output}/train/train.json"
    )
    return 0


def run_eval(args) -> int:
    from ..config import load_config

    check_kind(args.kind)
    if args.kind == "view":
        from ..prior.view_eval import ViewEvalConfig as Config
        from ..prior.view_eval import evaluate_view_prior as evaluate
        from ..prior.view_eval import format_view_table as table
    else:
        from ..prior.evaluate import PriorEvalConfig as Config
        from ..prior.evaluate import evaluate_prior as evaluate
        from ..prior.evaluate import format_table as table

    overrides = list(args.overrides) + ([f"model={args.model}"] if args.model else [])
    cfg = load_config(Config, args.config, overrides)
    record = evaluate(cfg, args.output)
    print(table(record))
    print(
        f"{record['samples']} samples in {record['sample_seconds']:.0f} s; wrote {args.output}/eval.json and samples.png"
    )
    return 0 if all(record["passed"].values()) else 1
