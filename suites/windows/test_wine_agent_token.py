"""hilagent's ``Token`` setting under Wine: the agent sends the collector's shared token in
HELLO (drivers/protocol/PROTOCOL.md 3.1) from a REG_SZ (as UTF-8) or REG_BINARY (as is) value
under its Parameters key, a collector that requires the token refuses the agent without it,
and a Token the protocol cannot carry fails the load instead of being sent wrong.
"""

from __future__ import annotations

import pytest

from hil.deploy import artifacts
from hil.deploy.artifacts import Deployed
from hil.errors import GuestError
from hil.wine.pytest_fixtures import WineDriver

pytestmark = [pytest.mark.windows, pytest.mark.wine]

SERVICE = "hilagent"
PARAMETERS = rf"HKLM\System\CurrentControlSet\Services\{SERVICE}\Parameters"
TOKEN = "kh-wine-token-\u00e9"  # not ASCII: REG_SZ is UTF-16 in the registry, UTF-8 on the wire


@pytest.fixture
def agent(hil_config, win_build) -> Deployed:
    """The agent to qualify: ``[drivers] windows_agent``, else the reference test build."""
    return artifacts.resolve(hil_config.drivers, "windows_agent", lambda: win_build["hilagent_test.sys"])


@pytest.fixture
def load_with_token(wine_guest, request):
    """``load_with_token(agent, port, reg_type, data) -> WineDriver``: install the agent, set
    its Token value (``reg_type`` None: none), start it."""
    loaded: list[WineDriver] = []

    def load(agent: Deployed, port: int, reg_type: str | None, data: str = "") -> WineDriver:
        request.node.user_properties.extend(p for p in agent.properties() if p not in request.node.user_properties)
        wine_guest.install_driver(agent.path, SERVICE, CollectorPort=port, BackoffMaxMs=300)
        drv = WineDriver(wine_guest, SERVICE, agent, len(wine_guest.dbgprint_lines()))
        drv.running = False
        loaded.append(drv)
        if reg_type is not None:
            wine_guest.run(["reg", "add", PARAMETERS, "/v", "Token", "/t", reg_type, "/d", data, "/f"]).check()
        wine_guest.start_driver(SERVICE)
        drv.running = True
        return drv

    yield load
    for drv in loaded:
        if drv.running:
            drv.stop()
        else:
            wine_guest.delete_driver(SERVICE)


@pytest.mark.parametrize(
    "reg_type,data", [("REG_SZ", TOKEN), ("REG_BINARY", TOKEN.encode().hex())], ids=["REG_SZ", "REG_BINARY"]
)
@pytest.mark.parametrize("collector", [{"token": TOKEN}], indirect=True)
def test_agent_sends_its_token_setting(wine_guest, agent, load_with_token, collector, reg_type, data):
    load_with_token(agent, collector.port, reg_type, data)
    aid = collector.wait_for_agent(kind="win-wdm", timeout=20)
    collector.flush(timeout=10)
    assert collector.stats(aid).batches >= 2
    assert collector.protocol_errors == 0, collector.errors()


@pytest.mark.parametrize("collector", [{"token": TOKEN, "hello_timeout": 5}], indirect=True)
def test_agent_without_the_token_is_refused(wine_guest, agent, load_with_token, collector):
    drv = load_with_token(agent, collector.port, None)
    drv.guest.wait_for_log(r"\[hilagent\] hello sent", timeout=20, start=drv.log_start)
    with pytest.raises(AssertionError, match="no agent"):
        collector.wait_for_agent(kind="win-wdm", timeout=3)
    assert collector.error_counts().get("Unauthorized", 0) >= 1
    assert "has no token" in collector.errors()[0].message


def test_a_token_too_long_for_hello_fails_the_load(wine_guest, agent, load_with_token, collector):
    with pytest.raises(GuestError, match="starting driver hilagent failed"):
        load_with_token(agent, collector.port, "REG_SZ", "t" * 256)
    assert any("Token setting" in line.text for line in wine_guest.dbgprint_lines())
    assert collector.agents() == []
