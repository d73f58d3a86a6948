"""A private network for protocol tests that need DNS.

    import netns
    ...
    if __name__ == '__main__':
        netns.main()

netns.main() runs the test file again inside a new network and mount
namespace (`unshare -n -m`, as root), where only a loopback interface
exists. There it brings lo up with the documentation networks
192.0.2.0/24, 198.51.100.0/24, 203.0.113.0/24 and 2001:db8::1/64 on it
(so a client can connect from an address that is not 127.0.0.1: any of
the IPv4 networks, or one of IPV6_CLIENTS), points
/etc/resolv.conf (bind-mounted, seen only inside) at 127.0.0.1, and runs
the tests. DnsServer runs dnsmasq on 127.0.0.1:53 with the records a test
gives it. Nothing leaves the namespace: it has no other interface.

Names under the zones given as local (default: test, example) that have
no record get NXDOMAIN (or NODATA); names anywhere else get REFUSED, which
resolvers report as a temporary error.
"""
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import harness  # noqa: E402

ENV_MARK = 'POSTAGE_NETNS'
NETWORKS = ['192.0.2.1/24', '198.51.100.1/24', '203.0.113.1/24', '2001:db8::1/64']
IPV6_CLIENTS = ['2001:db8::7', '2001:db8::20', '2001:db8::99']


def inside():
    return os.environ.get(ENV_MARK) == '1'


def _setup_inside():
    subprocess.run(['ip', 'link', 'set', 'lo', 'up'], check=True)
    for net in NETWORKS:
        subprocess.run(['ip', 'addr', 'add', net, 'dev', 'lo'], check=True)
    # IPv4 treats a whole prefix on lo as local; IPv6 only the addresses
    # given, so a few client addresses are added one by one.
    for addr in IPV6_CLIENTS:
        subprocess.run(['ip', 'addr', 'add', addr + '/128', 'dev', 'lo', 'nodad'], check=True)
    d = tempfile.mkdtemp(prefix='postage-netns-')
    conf = os.path.join(d, 'resolv.conf')
    with open(conf, 'w') as f:
        f.write('nameserver 127.0.0.1\noptions attempts:1 timeout:2\n')
    subprocess.run(['mount', '--bind', conf, '/etc/resolv.conf'], check=True)


def main():
    """Runs the calling test file's tests inside the namespace."""
    if not inside():
        if os.geteuid() != 0:
            harness.skip_file('needs root for a private network namespace (unshare -n -m)')
        unshare = shutil.which('unshare')
        if not unshare or not shutil.which('ip'):
            harness.skip_file('unshare or ip (util-linux, iproute2) is not installed')
        if not shutil.which('dnsmasq') and not os.path.exists('/usr/sbin/dnsmasq'):
            harness.skip_file('dnsmasq is not installed (package dnsmasq-base)')
        probe = subprocess.run([unshare, '-n', '-m', 'true'], capture_output=True)
        if probe.returncode != 0:
            harness.skip_file('cannot make a network namespace: ' + probe.stderr.decode(errors='replace'))
        env = dict(os.environ)
        env[ENV_MARK] = '1'
        script = os.path.abspath(sys.argv[0])
        r = subprocess.run([unshare, '-n', '-m', '--', sys.executable, script] + sys.argv[1:],
                           env=env)
        sys.exit(r.returncode)
    _setup_inside()
    harness.main()


def _quote_txt(text):
    """dnsmasq's --txt-record value: character-strings of at most 255
    octets, each quoted."""
    if isinstance(text, bytes):
        text = text.decode()
    parts = [text[i:i + 255] for i in range(0, len(text), 255)] or ['']
    for p in parts:
        if '"' in p or '\\' in p:
            raise ValueError('TXT text with a quote or backslash: ' + p)
    return ','.join(f'"{p}"' for p in parts)


class DnsServer:
    """dnsmasq on 127.0.0.1:53 inside the namespace, answering only from
    the records given here."""

    def __init__(self, local_zones=('test', 'example')):
        if not inside():
            raise unittest.SkipTest('DnsServer runs only inside netns.main()')
        self.dir = tempfile.mkdtemp(prefix='postage-dns-')
        self.local_zones = list(local_zones)
        self.records = []
        self.proc = None

    def txt(self, name, *texts):
        """One TXT record per text (each may be longer than 255 octets)."""
        for t in texts:
            self.records.append(f'txt-record={name},{_quote_txt(t)}')
        return self

    def a(self, name, ip):
        self.records.append(f'host-record={name},{ip}')
        return self

    def mx(self, name, host, pref=10):
        self.records.append(f'mx-host={name},{host},{pref}')
        return self

    def ptr(self, ip, name):
        if ':' in ip:
            import ipaddress
            rev = ipaddress.ip_address(ip).reverse_pointer
        else:
            rev = '.'.join(reversed(ip.split('.'))) + '.in-addr.arpa'
        self.records.append(f'ptr-record={rev},{name}')
        return self

    def clear(self):
        self.records = []
        return self

    def start(self):
        """(Re)starts dnsmasq with the records given so far."""
        self.stop()
        conf = os.path.join(self.dir, 'dnsmasq.conf')
        lines = ['no-resolv', 'no-hosts', 'no-poll', 'bind-interfaces',
                 'listen-address=127.0.0.1', 'port=53', 'cache-size=0', 'user=root',
                 'log-queries', f'log-facility={os.path.join(self.dir, "dnsmasq.log")}']
        lines += [f'local=/{z}/' for z in self.local_zones]
        lines += self.records
        with open(conf, 'w') as f:
            f.write('\n'.join(lines) + '\n')
        exe = shutil.which('dnsmasq') or '/usr/sbin/dnsmasq'
        self.proc = subprocess.Popen([exe, '--keep-in-foreground', '--conf-file=' + conf,
                                      '--pid-file='],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError('dnsmasq failed: ' + self.proc.stderr.read().decode())
            if _dns_answers():
                return self
            time.sleep(0.02)
        raise RuntimeError('dnsmasq did not start')

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc and self.proc.stderr:
            self.proc.stderr.close()
        self.proc = None

    def log(self):
        try:
            with open(os.path.join(self.dir, 'dnsmasq.log')) as f:
                return f.read()
        except FileNotFoundError:
            return ''

    def close(self):
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


def _dns_answers():
    """Does something answer DNS on 127.0.0.1:53?"""
    query = (b'\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00'
             b'\x05probe\x04test\x00\x00\x10\x00\x01')
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(0.2)
        try:
            s.sendto(query, ('127.0.0.1', 53))
            return s.recv(512)[:2] == b'\x12\x34'
        except OSError:
            return False


def connect_from(srv, source, timeout=20):
    """A socket to srv from the given source address (inside the
    namespace, any address of NETWORKS)."""
    family = socket.AF_INET6 if ':' in srv.host else socket.AF_INET
    s = socket.socket(family, socket.SOCK_STREAM)
    s.settimeout(timeout)
    s.bind((source, 0))
    s.connect((srv.host, srv.port))
    return s
