"""Disk full: the mail root and the spool on a small tmpfs, in a mount
namespace of our own (unshare -m), so nothing outside sees it.

The free space is stepped down a page at a time, from enough for the whole
message (staging file, two Maildir copies, the queue file) to none, and the
same is done with inodes. At each step one message goes to two local
mailboxes and a remote recipient; the client must get 250 with every copy
whole, or 452 4.3.1 with nothing left anywhere. Then the space is freed and
the same message must go through.
"""
import json
import os
import shutil
import subprocess
import sys

import common
from common import Tally

FS_BYTES = 256 * 1024
PAGE = 4096
LOCAL = [('alice@example.test', 'alice'), ('bob@example.test', 'bob')]
REMOTE = 'carol@remote.example'


def free_bytes(path):
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def free_inodes(path):
    return os.statvfs(path).f_favail


class Small:
    """The world: a Postage dir whose mail_root and spool_dir live on a
    tmpfs mounted at <dir>/small."""

    def __init__(self, inodes=None):
        self.p = common.Postage().__enter__()
        p = self.p
        self.small = os.path.join(p.dir, 'small')
        os.makedirs(self.small)
        opts = f'size={FS_BYTES},mode=0700'
        if inodes:
            opts += f',nr_inodes={inodes}'
        subprocess.run(['mount', '-t', 'tmpfs', '-o', opts, 'postage-faults', self.small],
                       check=True)
        self.mail_root = os.path.join(self.small, 'mail')
        self.spool = os.path.join(self.small, 'spool')
        p.set('mail_root', self.mail_root)
        p.set('spool_dir', self.spool)
        p.mail_root = self.mail_root
        p.spool_dir = self.spool
        p.add_domain('example.test')
        for addr, login in LOCAL:
            p.add_mailbox(login, 'unused-password')
            p.add_address(addr, login)
        p.add_forward('fwd@example.test', REMOTE)
        self.counter = 0

    def clear(self):
        """Empties the small file system and makes alice's Maildir and
        the spool (bob's Maildir is made by the first delivery)."""
        for name in os.listdir(self.small):
            path = os.path.join(self.small, name)
            if os.path.isdir(path):
                shutil.rmtree(path)
            else:
                os.unlink(path)
        for sub in ('tmp', 'new', 'cur'):
            os.makedirs(os.path.join(self.mail_root, 'alice', sub))
        os.makedirs(self.spool)
        with common.sqlite3.connect(self.p.db, isolation_level=None) as con:
            con.execute('DELETE FROM queue_recipients')
            con.execute('DELETE FROM queue_messages')

    def fill_to(self, want_free):
        """Writes a filler file until want_free bytes are free."""
        path = os.path.join(self.small, 'filler')
        have = free_bytes(self.small)
        if have > want_free:
            with open(path, 'ab') as f:
                f.write(b'\0' * (have - want_free))
        return free_bytes(self.small)

    def use_inodes_to(self, want_free):
        d = os.path.join(self.small, 'inode-filler')
        os.makedirs(d, exist_ok=True)
        i = 0
        while free_inodes(self.small) > want_free:
            open(os.path.join(d, f'f{i}'), 'w').close()
            i += 1
        return free_inodes(self.small)

    def send(self, tag, size_lines=400):
        body = common.make_body(tag) + b''.join(
            f'filler line {i:05d} of a message that takes some room on the disk\r\n'.encode()
            for i in range(size_lines))
        rc, out, _err = common.converse([self.p.binary(common.SMTP), '--db', self.p.db],
                                        self.p.env(), [a for a, _ in LOCAL] + ['fwd@example.test'],
                                        body)
        verdict, final = common.data_verdict(out)
        return body, verdict, final, out.decode('utf-8', 'replace')

    def state(self, tag, body_lf):
        copies, partial = {}, 0
        for addr, login in LOCAL:
            good = 0
            for path in common.copies_of(os.path.join(self.mail_root, login), tag):
                if common.delivered_copy_ok(path, body_lf, addr):
                    good += 1
                else:
                    partial += 1
            copies[addr] = good
        q = common.queue_state(self.p.db, self.spool)
        good = 0
        for mid, rcpt, st in q['rows']:
            path = q['files'].get(mid)
            if rcpt == REMOTE and path and common.queue_copy_ok(path, body_lf):
                good += 1
            elif rcpt == REMOTE:
                partial += 1
        copies[REMOTE] = good
        leftovers = list(q['staging'])
        row_ids = {r[0] for r in q['rows']}
        leftovers += [p for i, p in q['files'].items() if i not in row_ids]
        for _, login in LOCAL:
            leftovers += common.maildir_files(os.path.join(self.mail_root, login))['tmp']
        return copies, partial, leftovers

    def close(self):
        subprocess.run(['umount', self.small], check=False)
        self.p.__exit__(None, None, None)


def check(world, tally, what, tag, body, verdict, final, out):
    tally.runs += 1
    body_lf = common.lf_form(body)
    copies, partial, leftovers = world.state(tag, body_lf)
    label = f'{what}: {verdict} ({final or "no reply"}) copies={copies}'
    if partial:
        tally.problem('partial', label + f' partial={partial}')
    if leftovers:
        tally.problem('partial', label + f' half-written files left: {leftovers}')
    if verdict == 'accepted':
        if common.count_accepted(tally, copies, label):
            tally.delivered += 1
    else:
        if any(v > 0 for v in copies.values()):
            tally.problem('duplicated', label + ' (a copy despite the refusal)')
        if final and final.startswith('452 4.3.1'):
            tally.note('452 4.3.1 at DATA')
        else:
            tally.problem('error', label + ' wanted 452 4.3.1 for a full disk; dialog:\n'
                          + out[-600:])
    for rep in common.sanitizer_reports(world.p):
        tally.problem('error', what + ': sanitizer report ' + rep[:800])
    return verdict


def sweep_space(tally, quick):
    world = Small()
    try:
        # How much one message takes, measured on an empty disk.
        world.clear()
        before = free_bytes(world.small)
        tag = f'size{os.getpid()}'
        body, verdict, final, out = world.send(tag)
        if verdict != 'accepted':
            raise RuntimeError(f'the message does not fit an empty {FS_BYTES} byte disk: {final}')
        need = before - free_bytes(world.small)
        pages = need // PAGE + 2
        steps = range(pages, -1, -1) if not quick else sorted(
            {pages, pages - 1, pages - 3, pages // 2, pages // 3, 3, 2, 1, 0}, reverse=True)
        accepted_at = refused_at = None
        for k in steps:
            world.clear()
            got = world.fill_to(k * PAGE)
            world.counter += 1
            tag = f'full{os.getpid()}x{world.counter}'
            body, verdict, final, out = world.send(tag)
            check(world, tally, f'disk-full free={got}', tag, body, verdict, final, out)
            if verdict == 'accepted':
                accepted_at = got if accepted_at is None else min(accepted_at, got)
            else:
                refused_at = got if refused_at is None else max(refused_at, got)
            # Room again: the same client tries again and gets through.
            if verdict != 'accepted':
                os.unlink(os.path.join(world.small, 'filler'))
                world.counter += 1
                tag = f'freed{os.getpid()}x{world.counter}'
                body, verdict, final, out = world.send(tag)
                check(world, tally, f'disk-full freed after free={got}', tag, body, verdict,
                      final, out)
                if verdict != 'accepted':
                    tally.problem('error', f'after freeing the space the message was refused: '
                                  f'{final}')
        tally.note(f'one message needs {need} bytes; accepted down to {accepted_at} free, '
                   f'refused from {refused_at} free')
    finally:
        world.close()


def sweep_inodes(tally, quick):
    """The same with inodes: files run out before bytes."""
    world = Small(inodes=64)
    try:
        world.clear()
        before = free_inodes(world.small)
        tag = f'ino{os.getpid()}'
        body, verdict, final, out = world.send(tag, size_lines=10)
        if verdict != 'accepted':
            raise RuntimeError(f'no room for one message with {before} inodes: {final}')
        need = before - free_inodes(world.small)
        steps = range(need + 2, -1, -1) if not quick else sorted({need + 1, need, need - 1, 1, 0},
                                                                 reverse=True)
        for k in steps:
            if k < 0:
                continue
            world.clear()
            got = world.use_inodes_to(k)
            world.counter += 1
            tag = f'ino{os.getpid()}x{world.counter}'
            body, verdict, final, out = world.send(tag, size_lines=10)
            check(world, tally, f'disk-full free_inodes={got}', tag, body, verdict, final, out)
        tally.note(f'one message needs {need} inodes')
    finally:
        world.close()


def inside(quick):
    """Runs in the private mount namespace; prints the tally as JSON."""
    tally = Tally('disk-full')
    try:
        sweep_space(tally, quick)
        sweep_inodes(tally, quick)
    except Exception as e:
        import traceback
        tally.problem('error', f'disk-full: {e!r}\n' + traceback.format_exc()[-1500:])
    print(json.dumps(tally.__dict__))


def run(quick, log):
    tally = Tally('disk-full')
    if not common.built(common.SMTP):
        tally.skipped.append('smtp-handler is not built')
        return tally
    unshare = shutil.which('unshare')
    if os.geteuid() != 0 or not unshare:
        tally.skipped.append('needs root and unshare(1) for a private mount namespace')
        return tally
    probe = subprocess.run([unshare, '-m', '--propagation', 'private', 'true'],
                           capture_output=True)
    if probe.returncode != 0:
        tally.skipped.append('cannot make a mount namespace: ' + probe.stderr.decode()[-200:])
        return tally
    cmd = [unshare, '-m', '--propagation', 'private', sys.executable,
           os.path.join(common.HERE, 'faults.py'), '--inside-disk-full']
    if quick:
        cmd.append('--quick')
    r = subprocess.run(cmd, capture_output=True, timeout=900, env=dict(os.environ))
    try:
        data = json.loads(r.stdout.decode().strip().splitlines()[-1])
        tally.__dict__.update(data)
        tally.problems = [tuple(x) for x in tally.problems]
    except (ValueError, IndexError):
        tally.problem('error', f'disk-full run failed (rc={r.returncode}): '
                      + r.stderr.decode(errors='replace')[-2000:])
    return tally
