"""Network guard for test subprocesses: any connection to a non-loopback address raises.

conftest.py puts this folder first on PYTHONPATH for every subprocess a test starts, so `gtplus ...` and torchrun
children are guarded too. Loopback stays open because torchrun's gloo rendezvous uses it.
"""
import socket

_real_connect = socket.socket.connect
_real_connect_ex = socket.socket.connect_ex


class NetworkAccessError(RuntimeError):
    pass


def _is_local(sock, address):
    if sock.family == getattr(socket, 'AF_UNIX', None):
        return True
    host = address[0] if isinstance(address, tuple) else address
    return host in ('localhost', '::1', '0.0.0.0', '') or str(host).startswith('127.')


def _guarded_connect(self, address):
    if not _is_local(self, address):
        raise NetworkAccessError(f'test tried to open a network connection to {address!r}')
    return _real_connect(self, address)


def _guarded_connect_ex(self, address):
    if not _is_local(self, address):
        raise NetworkAccessError(f'test tried to open a network connection to {address!r}')
    return _real_connect_ex(self, address)


def install():
    socket.socket.connect = _guarded_connect
    socket.socket.connect_ex = _guarded_connect_ex


install()
