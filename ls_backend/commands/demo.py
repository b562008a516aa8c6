"""``ner-quality demo``: the plugin running in a local Label Studio, on the bundled sample.

The README's first command.  Needs nothing configured: it finds Label Studio (or installs it
into its own virtual environment), starts it on 127.0.0.1, trains the packaged MiniLM briefly
on CPU (a few minutes on 2 cores), imports the sample project with its annotators as Label
Studio users, connects ner-quality serve as the ML backend, pushes the review views and
writes the HTML report.  It then prints the URL, the login, the review views and how many of
the planted errors they caught, and runs until Ctrl-C, which stops Label Studio and the
backend and removes the temporary data folder.

--report-only skips Label Studio: train, analyse, write the report, exit.  With
LABEL_STUDIO_URL and LABEL_STUDIO_API_KEY set, the demo uses that server instead of starting
one.
"""

from __future__ import annotations

import argparse


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser("demo", help="the plugin in a local Label Studio, on the bundled sample",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="ner-quality-demo", help="output folder (default ./ner-quality-demo)")
    p.add_argument("--report-only", action="store_true",
                   help="no Label Studio: train, analyse, write the report and exit")
    p.add_argument("--no-wait", action="store_true",
                   help="stop the servers as soon as everything is pushed instead of waiting "
                        "for Ctrl-C")
    p.add_argument("--folds", type=int, default=2, help="cross-fitting folds (default 2)")
    p.add_argument("--epochs", type=int, default=3, help="training epochs per fold (default 3)")
    p.add_argument("--lr", type=float, default=3e-4, help="learning rate (default 3e-4)")
    p.add_argument("--batch-size", type=int, default=8, help="batch size (default 8)")
    p.add_argument("--seed", type=int, default=0)
    return p


def run(args: argparse.Namespace) -> int:
    from ls_backend.demo import run_demo

    try:
        run_demo(args.out, folds=args.folds, epochs=args.epochs, lr=args.lr,
                 batch_size=args.batch_size, report_only=args.report_only,
                 wait=not args.no_wait, seed=args.seed,
                 label_studio_url=args.settings.label_studio_url,
                 label_studio_api_key=args.settings.label_studio_api_key)
    except KeyboardInterrupt:  # before the demo was ready (Ctrl-C once ready ends it with 0)
        return 130  # the servers are stopped and the temporary folder removed already
    return 0
