#!/usr/bin/python3
"""postage's fault runs (issue 10): systematic syscall fault injection into
the SMTP handler, POP3 and the queue runner; a full disk; a locked
database; load. Ends with one line per family and a total line, and exits
non-zero when anything was lost, duplicated or left partial, or a run went
wrong in another way (a crash, a hang, a sanitizer report).

    POSTAGE_BUILD=build-faults tests/reliability/faults.py [--quick] [--family F ...]

--quick runs a sample (every syscall, a few call numbers each; smaller
disk, lock and load runs) in a few minutes; without it every call number
is failed in turn. scripts/faults builds and runs this.
"""
import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import common  # noqa: E402

FAMILIES = ['smtp-inject', 'pop3-inject', 'queue-inject', 'disk-full', 'db-locked', 'load']


def log(msg):
    print(msg, flush=True)


def run_family(name, args):
    if name in ('smtp-inject', 'pop3-inject', 'queue-inject'):
        import inject
        return inject.run_family(name, args.quick, args.jobs, log)
    if name == 'disk-full':
        import diskfull
        return diskfull.run(args.quick, log)
    if name == 'db-locked':
        import dblocked
        return dblocked.run(args.quick, log)
    if name == 'load':
        import load
        return load.run(args.quick, log, args.load_supervisors)
    raise ValueError(name)


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--quick', action='store_true', help='a sample, for CI')
    ap.add_argument('--family', action='append', choices=FAMILIES,
                    help='run only this family (may be repeated)')
    ap.add_argument('--jobs', type=int, default=min(2, os.cpu_count() or 1),
                    help='parallel workers for the injection runs')
    ap.add_argument('--load-supervisors', default='socket-activate,xinetd')
    ap.add_argument('--verbose', '-v', action='store_true',
                    help='print every problem, not only the first few')
    ap.add_argument('--inside-disk-full', action='store_true', help=argparse.SUPPRESS)
    args = ap.parse_args()

    if args.inside_disk_full:
        import diskfull
        diskfull.inside(args.quick)
        return 0

    if not os.access(common.STRACE, os.X_OK):
        log('faults: strace is not installed (apt-get install strace); skipped')
        return 77
    if not common.built(common.SMTP):
        log(f'faults: {common.BUILD}/{common.SMTP} is not built; skipped')
        return 77

    families = args.family or FAMILIES
    log(f'faults: build {common.BUILD}, {"quick" if args.quick else "full"} run, '
        f'{time.strftime("%Y-%m-%d %H:%M:%S %Z")}')
    tallies = []
    for name in families:
        t0 = time.monotonic()
        log(f'--- {name}')
        t = run_family(name, args)
        t.seconds = time.monotonic() - t0
        tallies.append(t)
        for s in t.skipped:
            log(f'{name}: skipped: {s}')
        for k, v in sorted(t.notes.items()):
            log(f'{name}: {k}: {v}')
            if args.verbose:
                for ex in t.examples.get(k, []):
                    log(f'    e.g. {ex}')
        limit = None if args.verbose else 12
        for kind, detail in t.problems[:limit]:
            log(f'{name}: PROBLEM {kind}: {detail}')
        if limit and len(t.problems) > limit:
            log(f'{name}: ... {len(t.problems) - limit} more problems (--verbose)')
        log(f'{name}: {t.seconds:.0f} s')

    log('')
    total = common.Tally('total')
    for t in tallies:
        log(t.line())
        total.merge(t)
    log(f'faults total: {total.runs} runs, lost {total.lost}, duplicated {total.duplicated}, '
        f'partial {total.partial}')
    errors = total.errors
    if errors:
        log(f'faults: {errors} runs went wrong in another way (crash, hang, wrong reply); '
            f'see PROBLEM lines')
    if total.failed():
        return 1
    if all(t.skipped and not t.runs for t in tallies):
        return 77
    return 0


if __name__ == '__main__':
    sys.exit(main())
