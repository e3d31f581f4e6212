"""The Cost view in a real browser (Playwright driving Debian's chromium) against a real
``airflow api-server``: login through Airflow's own login page, the view in the navigation, charts
as SVG that agree with the JSON API, no console errors, and a user limited to one DAG seeing only
its spend. Skips with the reason when no chromium is installed. Screenshots go to
``$MLCOST_SCREENSHOTS`` (``docs/img`` refreshes the README's), else a temporary folder."""

from __future__ import annotations

import pytest

# the first test also pays for the session's Airflow home and api-server (about a minute, more on a busy machine)
pytestmark = pytest.mark.timeout(900)


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    pg = context.new_page()
    pg.set_default_timeout(60_000)
    pg.errors = []  # console errors and uncaught exceptions, of the page and its frames
    pg.on("console", lambda m: pg.errors.append(f"console: {m.text}") if m.type == "error" else None)
    pg.on("pageerror", lambda e: pg.errors.append(f"pageerror: {e}"))
    yield pg
    context.close()


def login(page, server, user: str) -> None:
    """Through Airflow's (FAB's) login page, as a person would."""
    page.goto(f"{server.url}/mlcost/")
    assert "/auth/login" in page.url  # the view sent us to Airflow's login, coming back afterwards
    page.fill("input[name=username]", user)
    page.fill("input[name=password]", server.passwords[user])
    page.locator("input[type=submit], button[type=submit]").first.click()
    page.wait_for_url(f"{server.url}/mlcost/**")
    page.errors.clear()  # the login page is Airflow's; what counts is the Cost view's


def api(page, server, path: str, **params) -> dict:
    """The JSON API with the browser's own session cookie (no token): the same user as the page."""
    r = page.request.get(f"{server.url}/mlcost/{path}", params=params)
    assert r.status == 200, r.text()
    return r.json()


def chart_figures(root) -> dict:
    """Every chart under ``root`` (a locator): its paths' ``d`` and ``data-usd`` figures."""
    return root.locator("svg.chart").evaluate_all(
        """svgs => Object.fromEntries(svgs.map(s => [s.dataset.chart, {
            total: Number(s.dataset.totalUsd),
            paths: [...s.querySelectorAll('path')].map(p => ({d: p.getAttribute('d'), usd: Number(p.dataset.usd)}))
        }]))""",
    )


def test_anonymous_browser_is_refused(page, fab_server):
    page.goto(f"{fab_server.url}/mlcost/")
    assert "/auth/login" in page.url and page.locator("input[name=password]").count() == 1
    assert page.request.get(f"{fab_server.url}/mlcost/api/totals").status == 401


def test_admin_finds_the_cost_view_in_the_navigation_and_its_charts_match_the_api(page, fab_server, screenshots):
    login(page, fab_server, "admin")
    page.goto(f"{fab_server.url}/")
    page.get_by_role("button", name="Browse").click()
    page.get_by_role("menuitem", name="Cost view").click()
    frame = page.frame_locator("iframe")  # Airflow shows a plugin's nav view in its own frame
    frame.locator("svg.chart").first.wait_for()
    assert page.url.startswith(f"{fab_server.url}/plugin/mlcost-cost")

    charts = chart_figures(frame.locator("body"))
    assert set(charts) == {"spend-per-day", "idle-by-dag", "idle-by-team", "top-cost", "top-idle", "budget-windows"}
    for name, chart in charts.items():
        assert chart["paths"], name
        assert all(p["d"] and p["d"].startswith("M") for p in chart["paths"]), name
    totals = api(page, fab_server, "api/totals")["totals"]
    assert sum(p["usd"] for p in charts["spend-per-day"]["paths"]) == pytest.approx(totals["total_usd"])
    assert charts["spend-per-day"]["total"] == pytest.approx(totals["total_usd"])
    by_dag = api(page, fab_server, "api/costs", group="dag")["rows"]
    assert [p["usd"] for p in charts["idle-by-dag"]["paths"]] == pytest.approx([r["idle_usd"] for r in by_dag])
    top = api(page, fab_server, "api/top-steps", order="total")["steps"]
    assert [p["usd"] for p in charts["top-cost"]["paths"]] == pytest.approx([s["total_usd"] for s in top])
    body = frame.locator("body")
    assert "Simulated data" in body.inner_text()
    assert body.locator("#flagged .flag.refused").count() == 2  # refused and lost steps, marked
    assert body.locator("#flagged .flag.lost").count() == 1
    windows = api(page, fab_server, "api/budget-windows")["windows"]
    assert [p["usd"] for p in charts["budget-windows"]["paths"]] == pytest.approx([w["spent_usd"] for w in windows])
    assert page.errors == []

    page.goto(f"{fab_server.url}/mlcost/")
    page.screenshot(path=str(screenshots / "cost-view-admin.png"), full_page=True)
    assert page.errors == []


def test_a_user_limited_to_one_dag_sees_only_that_dags_spend(page, fab_server, screenshots):
    login(page, fab_server, "alice")
    page.goto(f"{fab_server.url}/")
    page.get_by_role("button", name="Browse").click()
    assert page.get_by_role("menuitem", name="Cost view").count() == 1
    page.goto(f"{fab_server.url}/mlcost/")
    dags = page.locator("#by-dag tr td:first-child").all_inner_texts()
    assert dags == ["team_a_train"]
    text = page.locator("body").inner_text()
    for other in ("team_b_train", "(no DAG)", "embed", "ads", "Budget windows"):
        assert other not in text, other
    totals = api(page, fab_server, "api/totals")["totals"]
    charts = chart_figures(page.locator("body"))
    assert sum(p["usd"] for p in charts["spend-per-day"]["paths"]) == pytest.approx(totals["total_usd"])
    assert float(page.locator("#totals").get_attribute("data-total-usd")) == pytest.approx(totals["total_usd"])
    admin_total = sum(r["total_usd"] for r in api_as_admin(fab_server)["rows"] if r["dag_id"] == "team_a_train")
    assert totals["total_usd"] == pytest.approx(admin_total)
    page.screenshot(path=str(screenshots / "cost-view-limited.png"), full_page=True)
    assert page.errors == []


def api_as_admin(server) -> dict:
    import httpx

    return httpx.get(f"{server.url}/mlcost/api/costs", headers=server.token("admin"), timeout=60).json()
