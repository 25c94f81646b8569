"""``python -m p3d.launch``: ``torchrun`` with an exit status a scheduler can act on.

It takes torchrun's arguments and *is* torchrun (``torch.distributed.run``), e.g.::

    python -m p3d.launch --standalone --nproc_per_node 8 -m p3d train --config k400.yaml --resume auto

Only the way it ends differs (see ``docs/distributed.md``):

* SIGTERM, SIGINT or SIGHUP to the launcher: torchrun forwards the signal to every worker, which writes its
  checkpoint (or pending features) and exits ``128 + signal``; torchrun waits for them (``--shutdown-timeout``,
  default 30 s, then SIGKILL).  Plain torchrun then exits 1 with a traceback; this exits ``128 + signal`` (143 for
  SIGTERM) with one line.
* A worker that fails: plain torchrun exits 1; this exits with the first failed worker's status (3: training
  diverged, 74: a write failed, 75: the output is locked by another job, 143: the worker was stopped by SIGTERM,
  ``128 + N``: killed by signal N).
* Workers never outlive the launcher: each follows it (:func:`p3d.process.follow_parent`), also under plain torchrun.
"""

from __future__ import annotations

import signal
import sys


def main(argv: list[str] | None = None) -> int:
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import parse_args, run

    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        run(args)
    except SignalException as e:
        sig = int(e.sigval)
        print(
            f"p3d.launch: stopped by {signal.Signals(sig).name}; the workers checkpointed and stopped (or were killed "
            f"after --shutdown-timeout)",
            file=sys.stderr,
        )
        return 128 + sig
    except ChildFailedError as e:
        rank, failure = e.get_first_failure()
        code = int(failure.exitcode)
        status = code if code > 0 else 128 - code  # a negative exit code: killed by signal -code
        print(f"p3d.launch: rank {rank} exited with status {status} (see its output above)", file=sys.stderr)
        return status
    return 0


if __name__ == "__main__":
    sys.exit(main())
