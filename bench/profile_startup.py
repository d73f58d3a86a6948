#!/usr/bin/python3
"""What a postage handler's start-up costs, piece by piece.

    /usr/bin/python3 bench/profile_startup.py [--build build-bench] [--rounds 7]

Runs one plain session (greeting, QUIT) of smtp-handler on a pipe, the way
every connection starts, and reports for each variant:

  instr     user-space instructions (valgrind callgrind): repeatable whatever
            else the machine does, so the column to compare
  cpu_ms    task-clock per run (perf stat), median of interleaved rounds
  faults    page faults per run (perf stat)
  syscalls  system calls of the whole run (strace -c)

Variants: the database (none, WAL with an empty log, WAL after 500 POP3-like
writes by processes that never close it, rollback journal), the link (as
built, -z lazy, static-pie, fully static; libm cannot be linked
statically into a dynamic program with glibc 2.36), and GnuTLS linked
in with its load-time constructor, without it (GNUTLS_NO_IMPLICIT_INIT=1),
or not linked at all. Then the inclusive instruction counts of the phases
(dynamic loader, SQLite open, schema parse, settings query, WAL recovery).
"""
import argparse
import os
import re
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def sh(cmd, **kw):
    return subprocess.run(cmd, capture_output=True, text=True, **kw)


def make_db(path, mode, writes=0):
    with open(os.path.join(ROOT, 'schema', 'schema.sql')) as f:
        schema = f.read()
    con = sqlite3.connect(path)
    con.executescript(schema)
    with con:
        con.executemany('INSERT OR REPLACE INTO settings VALUES (?, ?)', [
            ('hostname', 'mx.bench.test'), ('mail_root', os.path.dirname(path) + '/mail'),
            ('spool_dir', os.path.dirname(path) + '/spool')])
    if mode != 'wal':
        con.execute('PRAGMA journal_mode = %s' % mode)
    con.close()
    for i in range(writes):
        # Like a POP3 login: one upsert, and the process exits without
        # closing the database (no checkpoint, the log stays).
        pid = os.fork()
        if pid == 0:
            c = sqlite3.connect(path, isolation_level=None)
            c.execute("INSERT INTO pop_logins VALUES (?, 'pop0', ?) ON CONFLICT(ip) DO UPDATE "
                      "SET at = excluded.at", ('127.0.%d.%d' % (i // 250, i % 250), i))
            os._exit(0)
        os.waitpid(pid, 0)


def relink(build, out_dir):
    """Relinks smtp-handler from build's objects with other link options."""
    r = sh(['ninja', '-C', build, '-t', 'commands', 'smtp-handler/smtp-handler'])
    line = [l for l in r.stdout.splitlines() if '-o smtp-handler/smtp-handler ' in l]
    if not line:
        return {}
    base = line[-1].split()
    variants = {}

    def variant(name, edit):
        argv = edit(list(base))
        out = os.path.join(out_dir, name)
        argv[argv.index('-o') + 1] = out
        r = sh(argv, cwd=build)
        if r.returncode == 0:
            variants[name] = out
        else:
            print('# %s: link failed: %s' % (name, r.stderr.strip().splitlines()[-1:]), file=sys.stderr)

    variant('link: as built (PIE, -z now)', lambda a: a)
    variant('link: PIE, -z lazy', lambda a: [x if x != '-Wl,-z,now' else '-Wl,-z,lazy' for x in a])
    variant('link: static-pie', lambda a: [x for x in a if x not in ('-pie', '-Wl,--as-needed')] + ['-static-pie'])
    variant('link: static, no PIE', lambda a: [x for x in a if x not in ('-pie', '-Wl,--as-needed')] + ['-static', '-no-pie'])
    return variants


def gnutls_probes(out_dir):
    src = os.path.join(out_dir, 'probe.c')
    with open(src, 'w') as f:
        f.write('int main(void) { return 0; }\n')
    out = {}
    for name, extra in (('probe: plain dynamic program', []),
                        ('probe: same, linked with -lgnutls', ['-Wl,--no-as-needed', '-lgnutls'])):
        exe = os.path.join(out_dir, 'probe%d' % len(out))
        r = sh(['cc', '-O2', '-o', exe, src] + extra)
        if r.returncode == 0:
            out[name] = exe
    return out


def callgrind(argv, env, stdin_path, out_file):
    with open(stdin_path) as stdin:
        r = subprocess.run(['valgrind', '--tool=callgrind', '--callgrind-out-file=' + out_file] + argv,
                           stdin=stdin, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
    m = re.search(r'Collected : (\d+)', r.stderr)
    return int(m.group(1)) if m else None


PHASES = [
    ('dynamic loader (_dl_start)', r'rtld\.c:_dl_start '),
    ('  of which relocation', r'dl-reloc\.c:_dl_relocate_object '),
    ('db_open (all of it)', r':db_open '),
    ('  sqlite3_open_v2', r':sqlite3_open_v2 '),
    ('  schema parse (sqlite3InitOne)', r':sqlite3InitOne '),
    ('  settings query (config_load)', r':config_load '),
    ('  WAL index recovery', r':walIndexRecover|:sqlite3WalBeginReadTransaction|:walTryBeginRead'),
    ('library constructors (_dl_init)', r'dl-init\.c:_dl_init '),
    ('library destructors at exit (_dl_fini)', r'dl-fini\.c:_dl_fini '),
]


def phases(out_file):
    r = sh(['callgrind_annotate', '--inclusive=yes', '--threshold=100', out_file])
    found = {}
    for name, pat in PHASES:
        best = None
        for line in r.stdout.splitlines():
            if re.search(pat, line):
                m = re.match(r'\s*([\d,]+)', line)
                if m:
                    v = int(m.group(1).replace(',', ''))
                    best = v if best is None else max(best, v)
        if best is not None:
            found[name] = best
    return found


def perf_task_clock(argv, env, stdin_path, runs):
    with open(stdin_path) as stdin:
        r = subprocess.run(['perf', 'stat', '-x,', '-e', 'task-clock,page-faults', '-r', str(runs)] + argv,
                           stdin=stdin, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
    clock = faults = None
    for line in r.stderr.splitlines():
        parts = line.split(',')
        if len(parts) > 3 and parts[2].startswith('task-clock'):
            clock = float(parts[0])
        if len(parts) > 3 and parts[2].startswith('page-faults'):
            faults = float(parts[0])
    return clock, faults


def syscalls(argv, env, stdin_path, tmp):
    out = os.path.join(tmp, 'strace.out')
    with open(stdin_path) as stdin:
        subprocess.run(['strace', '-f', '-c', '-o', out] + argv, stdin=stdin,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    with open(out) as f:
        for line in f:
            if line.strip().endswith('total'):
                parts = line.split()
                return int(parts[3])
    return None


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--build', default=os.path.join(ROOT, 'build-bench'))
    ap.add_argument('--rounds', type=int, default=7)
    ap.add_argument('--runs', type=int, default=40, help='runs per perf stat round')
    ap.add_argument('--keep', action='store_true')
    args = ap.parse_args()
    for tool in ('valgrind', 'perf', 'strace', 'callgrind_annotate'):
        if not shutil.which(tool):
            sys.exit('profile_startup: %s is missing (apt-get install valgrind linux-perf strace)' % tool)
    handler = os.path.join(args.build, 'smtp-handler', 'smtp-handler')
    tmp = tempfile.mkdtemp(prefix='postage-profile.', dir='/var/tmp')
    try:
        quit_path = os.path.join(tmp, 'quit')
        with open(quit_path, 'w') as f:
            f.write('QUIT\r\n')
        dbs = {}
        for name, mode, writes in (('wal', 'wal', 0), ('wal500', 'wal', 500), ('rollback', 'delete', 0)):
            d = os.path.join(tmp, name)
            os.makedirs(d)
            make_db(os.path.join(d, 'postage.db'), mode, writes)
            dbs[name] = os.path.join(d, 'postage.db')
        env = dict(os.environ, POSTAGE_LOG_FILE=os.path.join(tmp, 'handler.log'))
        env.pop('LD_BIND_NOW', None)
        gt_env = dict(env, GNUTLS_NO_IMPLICIT_INIT='1')

        cases = []  # (label, argv, env)
        greeter = os.path.join(tmp, 'greeter')
        if sh(['gcc', '-static', '-O2', '-o', greeter, os.path.join(HERE, 'greeter.c')]).returncode == 0:
            cases.append(('static greeter (the floor)', [greeter], env))
        cases += [
            ('handler, no database (421)', [handler, '--db', os.path.join(tmp, 'none.db')], env),
            ('handler, WAL, empty log', [handler, '--db', dbs['wal']], env),
            ('handler, WAL, 500 writes not checkpointed', [handler, '--db', dbs['wal500']], env),
            ('handler, rollback journal', [handler, '--db', dbs['rollback']], env),
        ]
        pop3 = os.path.join(args.build, 'pop3-handler', 'pop3-handler')
        if os.access(pop3, os.X_OK):
            cases.append(('pop3-handler, WAL, empty log', [pop3, '--db', dbs['wal']], env))
        for label, exe in relink(args.build, tmp).items():
            if 'as built' in label:
                continue
            cases.append((label + ', WAL empty', [exe, '--db', dbs['wal']], env))
        for label, exe in gnutls_probes(tmp).items():
            cases.append((label, [exe], env))
            if 'gnutls' in label:
                cases.append((label + ', GNUTLS_NO_IMPLICIT_INIT=1', [exe], gt_env))

        print('# smtp-handler start-up, one session (greeting, QUIT) on a pipe; %s' %
              time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime()))
        print('# load average %.2f %.2f %.2f' % os.getloadavg())
        instr = {}
        for i, (label, argv, e) in enumerate(cases):
            instr[label] = callgrind(argv, e, quit_path, os.path.join(tmp, 'cg.%d' % i))
        sysc = {label: syscalls(argv, e, quit_path, tmp) for label, argv, e in cases}
        clocks = {label: [] for label, _, _ in cases}
        faults = {}
        for _ in range(args.rounds):
            for label, argv, e in cases:
                c, f = perf_task_clock(argv, e, quit_path, args.runs)
                if c is not None:
                    clocks[label].append(c)
                faults[label] = f
        print('%-58s %10s %8s %7s %9s' % ('variant', 'instr', 'cpu_ms', 'faults', 'syscalls'))
        for label, _, _ in cases:
            c = statistics.median(clocks[label]) if clocks[label] else float('nan')
            print('%-58s %10s %8.3f %7s %9s' % (label, '{:,}'.format(instr[label]) if instr[label] else '-', c,
                                                '%.0f' % faults[label] if faults.get(label) else '-',
                                                sysc[label] if sysc[label] is not None else '-'))
        print()
        print('# phases, inclusive instructions (callgrind)')
        for i, (label, _, _) in enumerate(cases):
            if not label.startswith(('handler', 'pop3')) and 'gnutls' not in label:
                continue
            ph = phases(os.path.join(tmp, 'cg.%d' % i))
            if ph:
                print('%s:' % label)
                for name, _ in PHASES:
                    if name in ph:
                        print('    %-44s %12s' % (name, '{:,}'.format(ph[name])))
    finally:
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            print('# kept %s' % tmp)


if __name__ == '__main__':
    main()
