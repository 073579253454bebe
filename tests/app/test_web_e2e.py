"""End to end: the onboarding page (`app/static/`) in headless Chromium against a real server.

The app from `create_app` runs under uvicorn in a thread of this process with a tiny random
TaNP; Debian's Chromium (`/usr/bin/chromium`, installed by `make system-deps`) is driven by
Playwright's own driver. Nothing is downloaded; the test skips only when that browser is absent.
"""

from __future__ import annotations

import itertools
import json
import re
import socket
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import torch
import uvicorn
from fastapi import FastAPI
from playwright.sync_api import Browser, BrowserContext, Page, expect, sync_playwright

from app.errors import RETRY_AFTER_SECONDS
from app.main import create_app
from app.settings import Settings
from app.state import ServiceState
from tanp.checkpoint import save_checkpoint
from tests.synthetic import write_interactions_csv
from training.config import preset_configs
from training.data import load_interactions
from training.episodes import random_split
from training.trainer import train_model

CHROMIUM = Path("/usr/bin/chromium")

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        not CHROMIUM.exists(),
        reason="Debian's chromium is not installed at /usr/bin/chromium "
        "(run `make system-deps`; this test never downloads a browser)",
    ),
]

CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
]
NUM_ITEMS = 60
VERSION = "v1"
WORDS = [
    "Alpha", "Bravo", "Charlie", "Delta", "Echo", "Foxtrot", "Golf", "Hotel", "India", "Juliet",
    "Kilo", "Lima", "Mike", "November", "Oscar", "Papa", "Quebec", "Romeo", "Sierra", "Tango",
]  # fmt: skip
# Markup in a name must show as text; an unbroken long name must wrap on a phone.
ODD_NAMES = {
    7: 'Artist 07 "Hotel" <b>&amp; Co</b>',
    1: "Artist 01 Bravo-Supercalifragilisticexpialidocious-Extraordinarily-Long-Band-Name",
}
NAMES = [
    ODD_NAMES.get(index, f"Artist {index:02d} {WORDS[index % len(WORDS)]}")
    for index in range(NUM_ITEMS)
]
ITEMS = [str(index) for index in range(NUM_ITEMS)]
# Strictly decreasing: the popularity fallback's top 20 are items 0..19, in order.
POPULARITY = [float((NUM_ITEMS - index) ** 1.5) for index in range(NUM_ITEMS)]
SETTLE_MS = 10_000


@dataclass
class LiveServer:
    """The running app (its state's holder lets a test take the model away) and its URL."""

    app: FastAPI
    base_url: str


@dataclass
class PageLog:
    """Everything the page did that a test may want to assert on afterwards."""

    requests: list[str] = field(default_factory=list)
    console_errors: list[str] = field(default_factory=list)
    page_errors: list[str] = field(default_factory=list)


@pytest.fixture(scope="module")
def catalog_models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model trained (a few epochs of the `paper` preset) on synthetic group-structured data
    with NUM_ITEMS items; the page's popularity order is then pinned to POPULARITY."""
    root = tmp_path_factory.mktemp("models")
    data = write_interactions_csv(root.parent / "interactions.csv", items=NUM_ITEMS, per_user=15)
    prepared = random_split(load_interactions(data), seed=0)
    model_config, train_config = preset_configs("paper", train={"epochs": 6, "patience": 0})
    model = train_model(prepared, model_config=model_config, train=train_config).model
    model.item_popularity.copy_(torch.tensor(POPULARITY))
    save_checkpoint(root / VERSION, model=model, items=ITEMS, item_names=NAMES, version=VERSION)
    return root


@pytest.fixture(scope="module")
def live_server(
    catalog_models_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveServer]:
    database = tmp_path_factory.mktemp("db") / "t.db"
    # Every field the test relies on is explicit, so no environment variable can change them.
    settings = Settings(
        models_dir=catalog_models_dir,
        active_model=VERSION,
        device="cpu",
        database_url=f"sqlite:///{database}",
        redis_url=None,
    )
    app = create_app(settings)
    # Bind first and hand the socket over: no race for a "free" port.
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    config = uvicorn.Config(
        app, host="127.0.0.1", port=port, log_level="warning", ws="none", lifespan="on"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [listener]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.05)
    try:
        yield LiveServer(app=app, base_url=f"http://127.0.0.1:{port}")
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        listener.close()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True
        )
        try:
            yield chromium
        finally:
            chromium.close()


def open_page(browser: Browser, *, width: int, height: int) -> tuple[BrowserContext, Page, PageLog]:
    context = browser.new_context(viewport={"width": width, "height": height})
    page = context.new_page()
    page.set_default_timeout(SETTLE_MS)
    log = PageLog()
    page.on("request", lambda request: log.requests.append(request.url))
    page.on(
        "console",
        lambda message: (
            log.console_errors.append(message.text) if message.type == "error" else None
        ),
    )
    page.on("pageerror", lambda error: log.page_errors.append(str(error)))
    return context, page, log


def settled(page: Page) -> None:
    """Wait until the latest recommendation request has been answered and drawn."""
    recommendations = page.locator("#recommendations")
    expect(recommendations).to_have_attribute("aria-busy", "false")
    expect(recommendations).not_to_have_class(re.compile(r"\bis-stale\b"))


def shown(page: Page) -> list[dict[str, str]]:
    """The recommendation rows as the user sees them, top first."""
    rows = page.locator("#recommendations > li")
    result: list[dict[str, str]] = rows.evaluate_all(
        """rows => rows.map(row => ({
            item_id: row.dataset.itemId,
            name: row.querySelector('.item-name').textContent,
            score: row.querySelector('.score').textContent,
            uncertainty: row.querySelector('.uncertainty')?.textContent ?? '',
            bar: row.querySelector('.score-fill').style.width,
        }))"""
    )
    return result


def api_recommend(base_url: str, support: list[dict[str, Any]]) -> dict[str, Any]:
    body = json.dumps({"support": support, "k": 20, "uncertainty_samples": 8}).encode()
    request = urllib.request.Request(
        f"{base_url}/v1/recommend", data=body, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        answer: dict[str, Any] = json.load(response)
    return answer


def search_and_rate(page: Page, *, query: str, name: str, button: str) -> None:
    """Type `query`, wait for `name` among the results, press its `button` ("Like"/"Not for me")."""
    page.get_by_label("Artist name").fill(query)
    results = page.locator("#search-results")
    expect(results.locator(".item-name", has_text=name)).to_have_count(1)
    control = results.get_by_role("button", name=f"{button} {name}", exact=True)
    control.click()
    expect(control).to_have_attribute("aria-pressed", "true")
    settled(page)


def test_onboarding_flow(browser: Browser, live_server: LiveServer, tmp_path: Path) -> None:
    context, page, log = open_page(browser, width=1280, height=900)
    try:
        page.goto(f"{live_server.base_url}/")

        # A brand-new listener sees the popular artists, flagged as the fallback.
        settled(page)
        expect(page.locator("#fallback-note")).to_be_visible()
        expect(page.locator("#fallback-note")).to_contain_text("most popular")
        expect(page.locator("#model-version")).to_have_text(VERSION)
        assert [row["item_id"] for row in shown(page)] == ITEMS[:20]
        assert page.locator("#recommendations .item-name").nth(7).text_content() == NAMES[7]

        # Keyboard only: type, Tab to the first result, Space likes it.
        search = page.get_by_label("Artist name")
        search.focus()
        page.keyboard.type("Delta", delay=30)
        # The most popular Delta comes first; Tab leaves the search box for its Like button.
        expect(page.locator("#search-results .item-name").first).to_have_text("Artist 03 Delta")
        page.keyboard.press("Tab")
        focused = page.evaluate(
            "[document.activeElement.getAttribute('aria-label'),"
            " getComputedStyle(document.activeElement).outlineStyle]"
        )
        assert focused == ["Like Artist 03 Delta", "solid"]
        page.keyboard.press("Space")
        expect(
            page.get_by_role("button", name="Like Artist 03 Delta", exact=True).first
        ).to_have_attribute("aria-pressed", "true")
        settled(page)

        search_and_rate(page, query="echo", name="Artist 04 Echo", button="Like")
        search_and_rate(page, query="Artist 12", name="Artist 12 Mike", button="Like")
        search_and_rate(page, query="kilo", name="Artist 10 Kilo", button="Not for me")

        taste = page.locator("#taste-list > li")
        expect(taste).to_have_count(4)
        expect(page.locator("#taste-count")).to_have_text("(3 liked, 1 not for me)")
        expect(page.locator("#fallback-note")).to_be_hidden()

        rated = {"3", "4", "12", "10"}
        first = shown(page)
        assert len(first) == 20
        assert not rated & {row["item_id"] for row in first}
        assert all(row["name"] == NAMES[int(row["item_id"])] for row in first)
        assert all(row["uncertainty"].startswith("± ") for row in first)
        # Bars are scaled within the list: the best is full, the rest never longer than above.
        widths = [float(row["bar"].removesuffix("%")) for row in first]
        assert widths[0] == 100.0
        assert widths == sorted(widths, reverse=True)
        # The page sent exactly the taste list: the API gives the same answer for it.
        direct = api_recommend(
            live_server.base_url,
            [
                {"item_id": "3", "rating": 1},
                {"item_id": "4", "rating": 1},
                {"item_id": "12", "rating": 1},
                {"item_id": "10", "rating": 0},
            ],
        )
        assert [row["item_id"] for row in first] == [item["item_id"] for item in direct["items"]]

        # Editing the taste list: flip the dislike, then remove a like; the list follows.
        page.get_by_role("button", name="Mark like: Artist 10 Kilo").click()
        settled(page)
        expect(page.locator("#taste-count")).to_have_text("(4 liked, 0 not for me)")
        flipped = shown(page)
        page.get_by_role("button", name="Remove Artist 12 Mike").click()
        settled(page)
        expect(taste).to_have_count(3)
        after_remove = shown(page)
        assert len(after_remove) == 20
        assert not {"3", "4", "10"} & {row["item_id"] for row in after_remove}
        assert after_remove != first
        assert after_remove != flipped
        # The search result forgot the removed rating too.
        page.get_by_label("Artist name").fill("Mike")
        expect(page.locator("#search-message")).to_contain_text("“Mike”")
        results = page.locator("#search-results")
        expect(
            results.get_by_role("button", name="Like Artist 12 Mike", exact=True)
        ).to_have_attribute("aria-pressed", "false")

        screenshot = tmp_path / "onboarding-recommendations.png"
        page.screenshot(path=str(screenshot), full_page=True)
        print(f"screenshot (recommendations): {screenshot}")

        # The model goes away: the next change gets a 503, shown with its retry countdown.
        state: ServiceState = live_server.app.state.service
        state.holder.clear()
        page.get_by_role("button", name="Remove Artist 04 Echo").click()
        message = page.locator("#rec-message")
        expect(message).to_be_visible()
        expect(message).to_have_attribute("role", "alert")
        expect(message).to_contain_text("The model is loading / unavailable, retrying in")
        expect(message.locator(".countdown")).to_have_text(re.compile(r"^[1-5]$"))
        expect(message.get_by_role("button", name="Retry now")).to_be_visible()
        expect(page.locator("#model-version")).to_have_text("unavailable (last answer from v1)")
        unavailable = tmp_path / "onboarding-503.png"
        page.screenshot(path=str(unavailable), full_page=True)
        print(f"screenshot (503): {unavailable}")

        # The model comes back: the page retries by itself after Retry-After seconds.
        state.models.follow(VERSION)
        expect(message).to_be_hidden(timeout=RETRY_AFTER_SECONDS * 1000 + SETTLE_MS)
        settled(page)
        recovered = shown(page)
        assert len(recovered) == 20
        assert not {"3", "10"} & {row["item_id"] for row in recovered}
        expect(page.locator("#model-version")).to_have_text(VERSION)

        origin = live_server.base_url + "/"
        assert log.requests
        assert all(url.startswith(origin) for url in log.requests), log.requests
        assert not log.page_errors
        assert not [text for text in log.console_errors if "Content Security Policy" in text]
    finally:
        context.close()
        if live_server.app.state.service.holder.current is None:
            live_server.app.state.service.models.follow(VERSION)


def question_ids(page: Page) -> list[str]:
    rows: list[str] = page.locator("#questions > li").evaluate_all(
        "rows => rows.map(row => row.dataset.itemId)"
    )
    return rows


def answer(page: Page, item_id: str, label: str) -> None:
    """Press `label` ("Like", "Not for me", "Don't know") on question `item_id`; wait for the
    question to go."""
    name = NAMES[int(item_id)]
    page.get_by_role("button", name=f"{label}: {name}", exact=True).click()
    expect(page.locator(f'#questions > li[data-item-id="{item_id}"]')).to_have_count(0)


def test_a_new_listener_answers_two_rounds_of_questions_and_sees_why(
    browser: Browser, live_server: LiveServer, tmp_path: Path
) -> None:
    context, page, log = open_page(browser, width=1280, height=900)
    try:
        page.goto(f"{live_server.base_url}/")
        expect(
            page.get_by_role("heading", name=re.compile("Do you know these artists"))
        ).to_be_visible()
        expect(page.locator("#questions-round")).to_have_text("(round 1)")
        expect(page.locator("#questions > li")).to_have_count(5)
        first_round = question_ids(page)
        # Round 1: two liked, one not, two unknown.
        for item_id, label in zip(
            first_round, ["Like", "Like", "Not for me", "Don't know", "Don't know"], strict=True
        ):
            answer(page, item_id, label)
        expect(page.locator("#questions-round")).to_have_text("(round 2)")
        expect(page.locator("#questions > li")).to_have_count(5)
        second_round = question_ids(page)
        assert not set(second_round) & set(first_round)
        for item_id, label in zip(
            second_round, ["Like", "Don't know", "Not for me", "Don't know", "Like"], strict=True
        ):
            answer(page, item_id, label)
        expect(page.locator("#questions-round")).to_have_text("(round 3)")
        third_round = question_ids(page)
        assert not set(third_round) & (set(first_round) | set(second_round))

        settled(page)
        liked = [first_round[0], first_round[1], second_round[0], second_round[4]]
        disliked = [first_round[2], second_round[2]]
        expect(page.locator("#taste-count")).to_have_text("(4 liked, 2 not for me)")
        expect(page.locator("#fallback-note")).to_be_hidden()
        rows = shown(page)
        assert len(rows) == 20
        assert not set(liked + disliked) & {row["item_id"] for row in rows}
        # Each recommendation says which liked artists it comes from, as the API does.
        direct = api_recommend(
            live_server.base_url,
            [{"item_id": item, "rating": 1} for item in liked]
            + [{"item_id": item, "rating": 0} for item in disliked],
        )
        expected = [
            " and ".join(NAMES[int(because["item_id"])] for because in item["because"])
            for item in direct["items"]
        ]
        lines = page.locator("#recommendations > li").evaluate_all(
            "rows => rows.map(row => row.querySelector('.because')?.textContent ?? '')"
        )
        assert [line.removeprefix("Because you liked ") for line in lines] == expected
        assert any(lines), "no recommendation was explained"
        assert all(
            all(liked_item["item_id"] in liked for liked_item in item["because"])
            for item in direct["items"]
        )
        screenshot = tmp_path / "onboarding-questions.png"
        page.screenshot(path=str(screenshot))
        print(f"screenshot (questions and explained recommendations): {screenshot}")
        assert not log.page_errors
    finally:
        context.close()


def test_phone_width_nothing_overflows(
    browser: Browser, live_server: LiveServer, tmp_path: Path
) -> None:
    context, page, log = open_page(browser, width=390, height=844)
    try:
        page.goto(f"{live_server.base_url}/")
        settled(page)
        # Rate the long-named artist from the recommendations themselves, then search for it.
        page.get_by_role("button", name=f"Like {NAMES[1]}", exact=True).click()
        settled(page)
        page.get_by_label("Artist name").fill("Supercalifragilistic")
        expect(page.locator("#search-results > li")).to_have_count(1)
        expect(page.locator("#taste-list > li")).to_have_count(1)
        assert page.evaluate("document.documentElement.scrollWidth") <= 390
        # One column: the three panels stack in reading order, each within the screen.
        boxes: list[dict[str, float]] = page.evaluate(
            """[...document.querySelectorAll('.panel')].map(panel => {
                const box = panel.getBoundingClientRect();
                return {top: box.top, bottom: box.bottom, left: box.left, right: box.right};
            })"""
        )
        assert len(boxes) == 4
        assert all(upper["bottom"] <= lower["top"] for upper, lower in itertools.pairwise(boxes))
        assert all(box["left"] >= 0 and box["right"] <= 390 for box in boxes)
        screenshot = tmp_path / "onboarding-phone.png"
        page.screenshot(path=str(screenshot), full_page=True)
        print(f"screenshot (390 px): {screenshot}")
        assert not log.page_errors
    finally:
        context.close()


def test_rejections_and_network_errors_are_explained(
    browser: Browser, live_server: LiveServer
) -> None:
    context, page, log = open_page(browser, width=1024, height=800)
    # A taste list saved by an earlier visit that this model cannot use: an id too long for the
    # schema (FastAPI's list-shaped 422) and an id the catalog lacks (the service's string 422).
    stale = [
        {"item_id": "x" * 200, "name": "Overlong Id", "rating": 1},
        {"item_id": "no-such-artist", "name": "Ghost Artist", "rating": 1},
    ]
    # Init scripts run on every navigation: seed only the first visit.
    context.add_init_script(
        "if (window.localStorage.getItem('tanp-rec.taste.v1') === null) "
        f"window.localStorage.setItem('tanp-rec.taste.v1', {json.dumps(json.dumps(stale))})"
    )
    try:
        page.goto(f"{live_server.base_url}/")
        message = page.locator("#rec-message")
        expect(message).to_contain_text("support → 0 → item_id: String should have at most 128")
        expect(page.locator("#taste-list > li")).to_have_count(2)

        page.get_by_role("button", name="Remove Overlong Id").click()
        expect(message).to_contain_text("unknown item ids in support: 'no-such-artist'")
        expect(message).to_have_attribute("role", "alert")

        page.get_by_role("button", name="Remove Ghost Artist").click()
        settled(page)
        expect(message).to_be_hidden()
        expect(page.locator("#fallback-note")).to_be_visible()

        # The connection drops: the page says so and offers a retry that works once it is back.
        page.route("**/v1/recommend", lambda route: route.abort("internetdisconnected"))
        page.get_by_role("button", name="Like Artist 05 Foxtrot", exact=True).click()
        expect(message).to_contain_text("Network error: the server cannot be reached")
        page.unroute("**/v1/recommend")
        message.get_by_role("button", name="Retry now").click()
        settled(page)
        expect(message).to_be_hidden()
        assert "5" not in {row["item_id"] for row in shown(page)}

        # The taste list survives a reload (this browser only).
        page.reload()
        settled(page)
        expect(page.locator("#taste-list > li")).to_have_count(1)
        expect(page.locator("#taste-list")).to_contain_text("Artist 05 Foxtrot")
        assert not log.page_errors
    finally:
        context.close()
