"""scripts/demo (issue 20): it serves the whole job, and every command it
prints does what it says.

Runs scripts/demo in a network and mount namespace of its own (so its
fixed loopback ports and its DNS server on 127.0.0.2:53 clash with
nothing), on the programs of this build (POSTAGE_DEMO_BUILD) and in a
temporary folder (POSTAGE_DEMO_DIR). Then it reads what the demo printed:
each step is a "## N. ..." line and the lines under it up to a blank line;
a line that begins with a space explains, every other one is a command.
Each command runs as printed (bash -c), in order, and the step's result is
checked. A new step in the demo without a check here fails the test, so
the demo cannot drift from what it prints.

Skips (exit 77) when not root or namespaces are not permitted.
"""
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import harness  # noqa: E402
INSIDE = 'POSTAGE_DEMO_NETNS'
SOURCE = os.environ.get('POSTAGE_SOURCE', os.path.dirname(os.path.dirname(HERE)))


def reexec_in_namespace():
    if os.geteuid() != 0:
        harness.skip_file('scripts/demo serves its DNS on port 53 and needs root')
    for tool in ('unshare', 'ip', 'swaks', 'curl', 'fetchmail', 'dnsmasq', 'openssl'):
        if not shutil.which(tool) and not os.path.exists(f'/usr/sbin/{tool}'):
            harness.skip_file(f'{tool} is not installed')
    harness.rerun_unshared(['unshare', '--net', '--mount'], INSIDE, 'namespaces',
                           setup='ip link set lo up')


if __name__ == '__main__' and os.environ.get(INSIDE) != '1':
    reexec_in_namespace()


def steps_of(text):
    """{step number: (title, [command lines])} from the demo's output."""
    steps = {}
    current = None
    for line in text.splitlines():
        m = re.match(r'^## (\d+)\. (.*)$', line)
        if m:
            current = int(m.group(1))
            steps[current] = (m.group(2), [])
            continue
        if current is None:
            continue
        if not line.strip():
            current = None
            continue
        if not line.startswith(' '):
            steps[current][1].append(line)
    return steps


class Demo(unittest.TestCase):

    def setUp(self):
        if os.environ.get(INSIDE) != '1':
            self.skipTest('runs inside its own namespaces only')
        self.dir = tempfile.mkdtemp(prefix='postage-demo-')
        self.addCleanup(shutil.rmtree, self.dir, True)
        self.out = os.path.join(self.dir, 'demo.out')
        env = dict(os.environ, POSTAGE_DEMO_BUILD=harness.BUILD,
                   POSTAGE_DEMO_DIR=os.path.join(self.dir, 'demo'),
                   ASAN_OPTIONS='detect_leaks=0:abort_on_error=1:log_path='
                   + os.path.join(self.dir, 'asan'),
                   UBSAN_OPTIONS='halt_on_error=1:print_stacktrace=1:log_path='
                   + os.path.join(self.dir, 'ubsan'))
        with open(self.out, 'wb') as f:
            self.proc = subprocess.Popen([os.path.join(SOURCE, 'scripts', 'demo')], cwd=SOURCE,
                                         stdout=f, stderr=subprocess.STDOUT, env=env,
                                         start_new_session=True)
        self.addCleanup(self.stop)
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            text = self.printed()
            if 'postage demo is running' in text and 'Where each message ended up' in text:
                return
            if self.proc.poll() is not None:
                self.fail(f'scripts/demo exited {self.proc.returncode}:\n{text[-3000:]}')
            time.sleep(0.2)
        self.fail('scripts/demo did not serve within 300 s:\n' + self.printed()[-3000:])

    def stop(self):
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()

    def printed(self):
        with open(self.out, encoding='utf-8', errors='replace') as f:
            return f.read()

    def run_line(self, line):
        r = subprocess.run(['bash', '-c', line], capture_output=True, timeout=120, cwd=self.dir)
        return r.returncode, r.stdout.decode(errors='replace') + r.stderr.decode(errors='replace')

    def test_every_printed_command_does_what_it_says(self):
        text = self.printed()
        self.assertIn('checks SPF, DKIM and DMARC', text, 'the demo runs without its DNS server')
        steps = steps_of(text)
        self.assertEqual(sorted(steps), list(range(1, 8)),
                         f'the demo prints steps this test does not know: {sorted(steps)}')
        demo = os.path.join(self.dir, 'demo')
        for n in sorted(steps):
            title, lines = steps[n]
            results = []
            for line in lines:
                rc, output = self.run_line(line)
                results.append((line, rc, output))
            with self.subTest(step=n, title=title):
                getattr(self, f'check_step_{n}')(results, demo)
        reports = [p for p in os.listdir(self.dir) if p.startswith(('asan', 'ubsan'))]
        self.assertEqual(reports, [], 'sanitizer reports from the demo\'s handlers')

    # -- what each step must show ------------------------------------------

    def commands(self, results, words):
        got = [r for r in results if r[0].split()[0] == words]
        self.assertTrue(got, f'no {words} command in this step: {[r[0] for r in results]}')
        return got

    def check_step_1(self, results, demo):
        (line, rc, out), = self.commands(results, 'swaks')
        self.assertEqual(rc, 0, out)
        self.assertIn('250 2.0.0 Ok: queued', out)
        (line, rc, out), = self.commands(results, 'ls')
        self.assertEqual(rc, 0, out)
        self.assertEqual(len(out.split()), 1, out)

    def check_step_2(self, results, demo):
        (line, rc, out), = self.commands(results, 'swaks')
        self.assertNotEqual(rc, 0, out)
        self.assertIn('554 5.7.1 <dave@elsewhere.test>: relay access denied', out)

    def check_step_3(self, results, demo):
        (listing, one) = self.commands(results, 'curl')
        self.assertEqual(listing[1], 0, listing[2])
        self.assertRegex(listing[2], r'^1 \d+', 'the list shows message 1')
        self.assertEqual(one[1], 0, one[2])
        self.assertIn('This is a test mailing', one[2])
        (line, rc, out), = self.commands(results, 'fetchmail')
        self.assertEqual(rc, 0, out)
        with open(os.path.join(demo, 'fetched.txt'), errors='replace') as f:
            self.assertIn('This is a test mailing', f.read())

    def check_step_4(self, results, demo):
        (line, rc, out), = self.commands(results, 'swaks')
        self.assertEqual(rc, 0, out)
        self.assertIn('250 2.0.0 Ok: queued', out)
        self.assertNotIn('AUTH', line, 'POP-before-SMTP needs no password')

    def check_step_5(self, results, demo):
        (line, rc, out), = self.commands(results, 'swaks')
        self.assertEqual(rc, 0, out)
        self.assertIn('235 2.7.0', out)
        self.assertIn('250 2.0.0 Ok: queued', out)

    def log_tail(self, demo):
        out = ''
        for name in ('postage.log', 'elsewhere/postage.log', 'supervisor.log'):
            try:
                with open(os.path.join(demo, name), errors='replace') as f:
                    out += f'== {name}\n' + f.read()[-2500:]
            except OSError:
                pass
        return out

    def check_step_6(self, results, demo):
        (line, rc, out), = self.commands(results, 'sleep')
        self.assertEqual(rc, 0, out + self.log_tail(demo))
        self.assertEqual(len([w for w in out.split() if ',S=' in w]), 2, out)
        (line, rc, out), = self.commands(results, 'grep')
        self.assertEqual(rc, 0, out)
        self.assertEqual(out.count('dkim=pass header.d=example.test header.s=demo'), 2, out)
        self.assertEqual(out.count('DKIM-Signature:'), 2, out)

    def check_step_7(self, results, demo):
        (line, rc, out), = self.commands(results, 'swaks')
        self.assertEqual(rc, 0, out)
        (line, rc, out), = self.commands(results, 'sleep')
        self.assertEqual(rc, 0, out)
        self.assertIn('Undelivered Mail Returned to Sender', out)
        self.assertIn('550 5.1.1 <nobody@elsewhere.test>: user unknown', out)


if __name__ == '__main__':
    harness.main()
