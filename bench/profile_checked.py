#!/usr/bin/python3
"""Where a checked message's time goes in postage's handler.

    /usr/bin/python3 bench/profile_checked.py [--build build-bench] [--no-rspamd]

As root. In a network and mount namespace of its own (only loopback,
dnsmasq on 127.0.0.1:53 serving the sender domain's SPF, DKIM key and
DMARC records, as bench/run's checks workload), one session (EHLO, MAIL,
RCPT, DATA of the same DKIM-signed ~4 KiB message, QUIT) from 127.0.0.1
to smtp-handler under systemd-socket-activate, with the handler run by
valgrind's callgrind, for each variant:

  plain      resolv.conf names a resolver that is not on loopback, so the
             loopback client is not checked (checks.c: checks_apply)
  checked    resolv.conf names 127.0.0.1: SPF, DKIM, DMARC
  rspamd     the same, with the setting rspamd (a private rspamd started
             here, tests/protocol/rspamd_server.py)

and prints the handler's user-space instructions (repeatable whatever else
the machine does; callgrind counts the dynamic loader too) and the
inclusive instructions of the parts of a session: start-up, the checks,
the filter, delivery. Instructions are not time (a DNS or rspamd round
trip waits without executing any), but they show what the handler itself
does more for a checked message than for a plain one.
"""
import argparse
import base64
import os
import re
import shutil
import smtplib
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
MARK = 'POSTAGE_PROFILE_NETNS'
SENDER_DOMAIN = 'checks.example.net'
SENDER = 'sender@' + SENDER_DOMAIN
HELO = 'client.' + SENDER_DOMAIN
RCPT = 'bench@bench.test'
DNS_OTHER = '10.53.0.53'

PARTS = [
    ('dynamic loader (_dl_start)', r'rtld\.c:_dl_start '),
    ('libraries loaded later (dlopen)', r':dlopen@@|:dlopen '),
    ('db_open', r':db_open '),
    ('SPF at MAIL (checks_mail_from)', r':checks_mail_from '),
    ('DKIM and DMARC at end of data (checks_message)', r':checks_message '),
    ('  dkim_verify', r':dkim_verify '),
    ('    RSA verification (pubkey_rsa_sha256_verify)', r':pubkey_rsa_sha256_verify '),
    ('  dmarc_check', r':dmarc_check '),
    ('  header_copy_edited (the copy with our field)', r':header_copy_edited '),
    ('DNS queries (res_nquery)', r'res_nquery'),
    ('rspamd (spam_filter_message)', r':spam_filter_message '),
    ('  reverse DNS for Hostname (client_hostname)', r':client_hostname '),
    ('  the exchange (rspamd_check)', r':rspamd_check '),
    ('delivery (deliver)', r'delivery\.c:deliver '),
]


def sh(cmd, **kw):
    return subprocess.run(cmd, capture_output=True, text=True, **kw)


def inside_setup(tmp):
    sh(['ip', 'link', 'set', 'lo', 'up'])
    sh(['ip', 'addr', 'add', DNS_OTHER + '/32', 'dev', 'lo'])
    key = os.path.join(tmp, 'dkim.pem')
    subprocess.run(['openssl', 'genpkey', '-algorithm', 'RSA', '-pkeyopt', 'rsa_keygen_bits:2048',
                    '-out', key], check=True, capture_output=True)
    pem = sh(['openssl', 'rsa', '-in', key, '-traditional']).stdout.encode()
    der = subprocess.run(['openssl', 'pkey', '-in', key, '-pubout', '-outform', 'DER'],
                         capture_output=True, check=True).stdout
    records = {
        SENDER_DOMAIN: 'v=spf1 ip4:127.0.0.0/8 -all',
        HELO: 'v=spf1 ip4:127.0.0.0/8 -all',
        'bench._domainkey.' + SENDER_DOMAIN: 'v=DKIM1; k=rsa; p=' + base64.b64encode(der).decode(),
        '_dmarc.' + SENDER_DOMAIN: 'v=DMARC1; p=reject; adkim=s; aspf=s',
    }
    lines = ['no-resolv', 'no-hosts', 'no-poll', 'bind-interfaces',
             'listen-address=127.0.0.1,' + DNS_OTHER, 'port=53', 'cache-size=0', 'user=root',
             'local=/test/', 'local=/example.net/']
    for name, t in records.items():
        parts = [t[i:i + 255] for i in range(0, len(t), 255)]
        lines.append('txt-record=%s,%s' % (name, ','.join('"%s"' % x for x in parts)))
    conf = os.path.join(tmp, 'dnsmasq.conf')
    with open(conf, 'w') as f:
        f.write('\n'.join(lines) + '\n')
    dns = subprocess.Popen([shutil.which('dnsmasq') or '/usr/sbin/dnsmasq', '--keep-in-foreground',
                            '--conf-file=' + conf, '--pid-file='], stderr=subprocess.DEVNULL)
    time.sleep(0.5)
    import dkim
    head = ('From: Bench Sender <%s>\r\nTo: <%s>\r\nSubject: bench checks message\r\n'
            'Message-ID: <checks.bench@%s>\r\nDate: Mon, 23 Nov 2026 10:00:00 +0000\r\n'
            'MIME-Version: 1.0\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n'
            % (SENDER, RCPT, SENDER_DOMAIN))
    body = ('checks ' + 'x' * 70 + '\r\n') * 52
    msg = (head + body).encode()
    sig = dkim.sign(msg, b'bench', SENDER_DOMAIN.encode(), pem, canonicalize=(b'relaxed', b'relaxed'),
                    include_headers=[b'from', b'to', b'subject', b'date', b'message-id',
                                     b'mime-version', b'content-type'])
    return dns, sig + msg


def make_db(tmp):
    db = os.path.join(tmp, 'postage.db')
    with open(os.path.join(ROOT, 'schema', 'schema.sql')) as f:
        schema = f.read()
    con = sqlite3.connect(db)
    con.executescript(schema)
    with con:
        con.executemany('INSERT OR REPLACE INTO settings VALUES (?, ?)', [
            ('hostname', 'mx.bench.test'), ('mail_root', os.path.join(tmp, 'mail')),
            ('spool_dir', os.path.join(tmp, 'spool'))])
        con.execute("INSERT INTO domains VALUES ('bench.test')")
        con.execute("INSERT INTO mailboxes (login, password) VALUES ('bench', '$6$x$y')")
        con.execute("INSERT INTO addresses VALUES (?, 'bench')", (RCPT,))
    con.close()
    os.makedirs(os.path.join(tmp, 'mail'), exist_ok=True)
    return db


def free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def run_variant(handler, db, resolv, message, out_file, tmp, sessions=0):
    """callgrind of one session into out_file; or, with sessions, perf
    stat's task-clock of that many sessions, each its own file
    out_file.PID: returns their median in ms."""
    port = free_port()
    log = open(os.path.join(tmp, 'supervisor.log'), 'ab')
    if sessions:
        tool = ['/bin/sh', '-c', 'exec perf stat -x, -e task-clock,page-faults -o "$0.$$" "$@"', out_file]
    else:
        tool = ['valgrind', '--tool=callgrind', '--callgrind-out-file=' + out_file]
    argv = ['unshare', '--mount', '--', '/bin/sh', '-c', 'mount --bind "$0" /etc/resolv.conf && exec "$@"',
            resolv, shutil.which('systemd-socket-activate'), '--inetd', '-a', '-l', '127.0.0.1:%d' % port,
            '-E', 'POSTAGE_LOG_FILE=' + os.path.join(tmp, 'handler.log')] + tool + [handler, '--db', db]
    sup = subprocess.Popen(argv, stdout=log, stderr=log, start_new_session=True)
    deadline = time.monotonic() + 10
    while True:
        try:
            socket.create_connection(('127.0.0.1', port), timeout=1).close()
            break
        except OSError:
            if time.monotonic() > deadline:
                raise SystemExit('the supervisor did not listen')
            time.sleep(0.05)
    # That probe was a session too: wait for its handler, then remove its profile.
    time.sleep(3)
    d = os.path.dirname(out_file)
    for n in os.listdir(d):
        if n.startswith(os.path.basename(out_file)):
            os.unlink(os.path.join(d, n))
    walls = []
    for _ in range(max(sessions, 1)):
        t0 = time.perf_counter()
        c = smtplib.SMTP('127.0.0.1', port, local_hostname=HELO, timeout=120)
        c.sendmail(SENDER, [RCPT], message)
        c.quit()
        walls.append((time.perf_counter() - t0) * 1000)
        time.sleep(0.05)
    walls.sort()
    deadline = time.monotonic() + 60
    while not os.path.exists(out_file) and not sessions and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(1)
    os.killpg(sup.pid, 15)
    sup.wait()
    if sessions:
        vals, faults = [], []
        for n in os.listdir(d):
            if n.startswith(os.path.basename(out_file) + '.'):
                with open(os.path.join(d, n)) as f:
                    for line in f:
                        if 'task-clock' in line:
                            vals.append(float(line.split(',')[0]))
                        if 'page-faults' in line:
                            faults.append(float(line.split(',')[0]))
        vals.sort()
        faults.sort()
        if not vals:
            return None
        return vals[len(vals) // 2], faults[len(faults) // 2] if faults else 0, walls[len(walls) // 2]
    return None


def annotate(out_file):
    r = sh(['callgrind_annotate', '--inclusive=yes', '--threshold=100', out_file])
    total = None
    m = re.search(r'([\d,]+) \(100\.0%\)\s+PROGRAM TOTALS', r.stdout) or \
        re.search(r'([\d,]+)\s+PROGRAM TOTALS', r.stdout)
    if m:
        total = int(m.group(1).replace(',', ''))
    found = {}
    for name, pat in PARTS:
        best = None
        for line in r.stdout.splitlines():
            if re.search(pat, line):
                mm = re.match(r'\s*([\d,]+)', line)
                if mm:
                    v = int(mm.group(1).replace(',', ''))
                    best = v if best is None else max(best, v)
        found[name] = best
    return total, found


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--build', default=os.path.join(ROOT, 'build-bench'))
    ap.add_argument('--no-rspamd', action='store_true')
    ap.add_argument('--keep', action='store_true', help='keep the temporary directory (callgrind files)')
    ap.add_argument('--cpu', type=int, default=0, metavar='N',
                    help="also N sessions of each variant under perf stat: the handler's median task-clock")
    args = ap.parse_args()
    if os.environ.get(MARK) != '1':
        if os.geteuid() != 0:
            sys.exit('profile_checked: needs root (a network and mount namespace)')
        for tool in ('valgrind', 'callgrind_annotate', 'dnsmasq', 'systemd-socket-activate', 'unshare'):
            if not shutil.which(tool) and not os.path.exists('/usr/sbin/' + tool):
                sys.exit('profile_checked: %s is missing' % tool)
        env = dict(os.environ, **{MARK: '1'})
        r = subprocess.run(['unshare', '-n', '-m', '--', sys.executable, os.path.abspath(__file__)]
                           + sys.argv[1:], env=env)
        sys.exit(r.returncode)

    handler = os.path.join(os.path.abspath(args.build), 'smtp-handler', 'smtp-handler')
    tmp = tempfile.mkdtemp(prefix='postage-profile-')
    rspamd = None
    dns = None
    try:
        dns, message = inside_setup(tmp)
        db = make_db(tmp)
        local = os.path.join(tmp, 'resolv-local.conf')
        other = os.path.join(tmp, 'resolv-other.conf')
        with open(local, 'w') as f:
            f.write('nameserver 127.0.0.1\noptions attempts:1 timeout:2\n')
        with open(other, 'w') as f:
            f.write('nameserver %s\noptions attempts:1 timeout:2\n' % DNS_OTHER)
        variants = [('plain', other, None), ('checked', local, None)]
        if not args.no_rspamd:
            sys.path.insert(0, os.path.join(ROOT, 'tests', 'protocol'))
            import rspamd_server
            if rspamd_server.unavailable() is None:
                rspamd = rspamd_server.Rspamd(os.path.join(tmp, 'rspamd'), '127.0.0.1:%d' % free_port(),
                                              log_level='warning').start(timeout=300)
                variants.append(('rspamd', local, rspamd.normal))
        results = {}
        for name, resolv, where in variants:
            con = sqlite3.connect(db)
            with con:
                con.execute("DELETE FROM settings WHERE key = 'rspamd'")
                if where:
                    con.execute("INSERT INTO settings VALUES ('rspamd', ?)", (where,))
            con.close()
            out = os.path.join(tmp, 'cg.' + name)
            run_variant(handler, db, resolv, message, out, tmp)
            results[name] = annotate(out)
            if args.cpu:
                results[name][1]['task-clock ms, median of %d sessions (perf stat)' % args.cpu] = \
                    run_variant(handler, db, resolv, message, os.path.join(tmp, 'perf.' + name), tmp,
                                sessions=args.cpu)
        with open(os.path.join(tmp, 'handler.log'), errors='replace') as f:
            log = f.read()
        if 'dkim=pass' not in log or 'dmarc=pass' not in log:
            print('# warning: the checked message did not pass DKIM and DMARC: see the log below')
            print(log[-2000:])
        names = [n for n, _, _ in variants]
        print('%-52s %s' % ('user-space instructions (callgrind), one session',
                            ' '.join('%14s' % n for n in names)))
        print('%-52s %s' % ('whole handler', ' '.join('%14s' % ('{:,}'.format(results[n][0] or 0))
                                                        for n in names)))
        for part, _ in PARTS:
            vals = [results[n][1].get(part) for n in names]
            if any(vals):
                print('%-52s %s' % (part, ' '.join('%14s' % ('{:,}'.format(v) if v else '-') for v in vals)))
        if args.cpu:
            part = 'task-clock ms, median of %d sessions (perf stat)' % args.cpu
            print('%-52s %s' % (part, ' '.join('%14s' % ('%.2f' % results[n][1][part][0]
                                                       if results[n][1].get(part) else '-') for n in names)))
            print('%-52s %s' % ('page faults, median', ' '.join('%14s' % ('%d' % results[n][1][part][1]
                                                                if results[n][1].get(part) else '-')
                                                               for n in names)))
            print('%-52s %s' % ('session wall ms (client: connect to QUIT), median',
                                ' '.join('%14s' % ('%.1f' % results[n][1][part][2]
                                                   if results[n][1].get(part) else '-') for n in names)))
    finally:
        if rspamd:
            rspamd.stop()
        if dns:
            dns.terminate()
            dns.wait()
        if args.keep:
            print('# kept ' + tmp)
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == '__main__':
    main()
