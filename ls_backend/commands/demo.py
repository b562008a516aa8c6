"""``ner-quality demo``: sample dataset → cross-fit → analysis → HTML report (→ Label Studio).

The README's first command.  Needs nothing configured: it trains the packaged MiniLM briefly on
CPU (a few minutes on 2 cores) and prints the report path.  With ``LABEL_STUDIO_URL`` and
``LABEL_STUDIO_API_KEY`` set — or ``--with-label-studio`` and a ``label-studio`` executable
installed — it also creates a project, imports the tasks, connects ``ner-quality serve`` as the
ML backend and pushes the review views.  See :mod:`ls_backend.demo`.
"""

from __future__ import annotations

import argparse


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser("demo", help="end-to-end demo on the bundled sample dataset",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="ner-quality-demo", help="output folder (default ./ner-quality-demo)")
    p.add_argument("--folds", type=int, default=2, help="cross-fitting folds (default 2)")
    p.add_argument("--epochs", type=int, default=3, help="training epochs per fold (default 3)")
    p.add_argument("--lr", type=float, default=3e-4, help="learning rate (default 3e-4)")
    p.add_argument("--batch-size", type=int, default=8, help="batch size (default 8)")
    p.add_argument("--with-label-studio", action="store_true",
                   help="start a local label-studio (if installed) when none is configured")
    p.add_argument("--keep-running", action="store_true",
                   help="leave the started Label Studio / backend running")
    p.add_argument("--seed", type=int, default=0)
    return p


def run(args: argparse.Namespace) -> int:
    from ls_backend.demo import run_demo

    res = run_demo(args.out, folds=args.folds, epochs=args.epochs, lr=args.lr,
                   batch_size=args.batch_size,
                   with_label_studio=args.with_label_studio, keep_running=args.keep_running,
                   seed=args.seed, label_studio_url=args.settings.label_studio_url,
                   label_studio_api_key=args.settings.label_studio_api_key)
    print(res["report"])
    return 0
