"""Is a libvirt daemon there? The socket file alone does not say (a killed daemon leaves it)."""

import socket

from hil.provision.daemons import ensure_daemons, socket_answers


def test_a_listening_socket_answers(tmp_path):
    path = tmp_path / "live-sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as srv:
        srv.bind(str(path))
        srv.listen(1)
        assert socket_answers(path)


def test_the_socket_file_of_a_dead_daemon_does_not_answer(tmp_path):
    path = tmp_path / "stale-sock"
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(str(path))
    srv.listen(1)
    srv.close()  # the daemon is gone, its socket file stays
    assert path.exists()
    assert not socket_answers(path)


def test_no_socket_file_does_not_answer(tmp_path):
    assert not socket_answers(tmp_path / "never-created")


def test_a_live_daemon_is_left_alone(tmp_path):
    """Nothing is started or unlinked when every daemon answers."""
    path = tmp_path / "live-sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as srv:
        srv.bind(str(path))
        srv.listen(1)
        ensure_daemons("qemu:///system", sockets={"libvirtd": path}, timeout=0.1)
        assert path.exists() and socket_answers(path)


def test_other_uris_are_the_users_to_run(tmp_path):
    stale = tmp_path / "stale-sock"
    ensure_daemons("qemu+ssh://lab/system", sockets={"libvirtd": stale}, timeout=0.1)
    assert not stale.exists()
