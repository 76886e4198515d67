"""In a real browser, the portal's Content-Security-Policy refuses a script slipped into a page."""

from __future__ import annotations

import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def test_an_injected_inline_script_does_not_run(live_server, new_page, csp_violations):  # type: ignore[no-untyped-def]
    page = new_page()
    injected = '<script>document.title = "pwned"</script><img src=x onerror="document.title=1">'

    def inject(route) -> None:  # type: ignore[no-untyped-def]
        # The portal's real answer, headers included, with markup an attacker managed to inject.
        response = route.fetch()
        assert "script-src 'self'" in response.headers["content-security-policy"]
        route.fulfill(
            response=response, body=response.text().replace("</main>", injected + "</main>")
        )

    page.route(f"{live_server.url}/accounts/login/", inject)
    page.goto(f"{live_server.url}/accounts/login/")
    page.wait_for_load_state("load")
    assert page.title() != "pwned" and page.title() != "1"
    assert page.get_by_label("Email").is_visible()  # the page itself works
    blocked = [v for v in csp_violations if "script-src" in v]
    assert len(blocked) >= 2, csp_violations  # the inline script and the onerror handler
    csp_violations.clear()  # expected here; new_page fails any other test on a violation
