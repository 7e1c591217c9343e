"""The web monitor in a real browser: Debian's chromium driven over WebDriver
(chromium-driver, through selenium) against a real master and engines.

Each test saves screenshots of the pages it visits, at 1280x800 and at a
phone's width, under its temporary directory (`screenshots/`)."""

from __future__ import annotations

import os
import pathlib
import shutil
import subprocess
import time

import pytest

from conftest import Farm, _bin

if not os.environ.get("CI"):  # CI installs selenium (scripts/test); elsewhere it may be missing
    pytest.importorskip("selenium")
from selenium import webdriver  # noqa: E402
from selenium.common.exceptions import StaleElementReferenceException, TimeoutException  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.common.keys import Keys  # noqa: E402
from selenium.webdriver.common.action_chains import ActionChains  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
DRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
SIZES = {"desktop": (1280, 800), "phone": (390, 844)}


@pytest.fixture
def browser(tmp_path):
    if not (os.path.exists(CHROMIUM) and os.path.exists(DRIVER)):
        msg = "chromium and chromium-driver are not installed (apt-get install chromium chromium-driver)"
        if os.environ.get("CI"):
            pytest.fail(msg)
        pytest.skip(msg)
    opts = webdriver.ChromeOptions()
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                f"--window-size={SIZES['desktop'][0]},{SIZES['desktop'][1]}"):
        opts.add_argument(arg)
    opts.binary_location = CHROMIUM
    service = webdriver.ChromeService(executable_path=DRIVER)
    driver = webdriver.Chrome(service=service, options=opts)
    driver.set_page_load_timeout(30)
    driver.shots = tmp_path / "screenshots"
    driver.shots.mkdir()
    yield driver
    driver.quit()


def shoot(driver, name: str) -> None:
    """Screenshots of the current page at both sizes."""
    for label, (w, h) in SIZES.items():
        driver.set_window_size(w, h)
        time.sleep(0.2)
        driver.save_screenshot(str(driver.shots / f"{name}-{label}.png"))
    driver.set_window_size(*SIZES["desktop"])


def wait(driver, what: str, cond, timeout: float = 60):
    try:
        # The pages redraw as the feed arrives: an element found a moment
        # ago may be gone, which only means "look again".
        return WebDriverWait(driver, timeout, poll_frequency=0.1,
                             ignored_exceptions=[StaleElementReferenceException]).until(lambda d: cond(d))
    except TimeoutException:
        console = "\n".join(e["message"][:300] for e in driver.get_log("browser"))
        raise AssertionError(f"timed out waiting for {what}; page: {driver.current_url}\n"
                             + driver.find_element(By.TAG_NAME, "main").text[:2000]
                             + "\nbrowser console:\n" + console)


def click(driver, what: str, selector: str) -> None:
    """Clicks the element `selector` names once it is there, looking again
    if a redraw replaced it between the finding and the click."""
    def attempt(d):
        found = d.find_elements(By.CSS_SELECTOR, selector)
        if not found:
            return False
        found[0].click()
        return True
    wait(driver, what, attempt)


def cells(driver) -> list[str]:
    return [c.get_attribute("class") for c in driver.find_elements(By.CSS_SELECTOR, ".strip .cell")]


def cli(farm: Farm, *args: str, token: str | None = None) -> str:
    env = dict(os.environ, DRQUEUE_URL=farm.url)
    if token:
        env["DRQUEUE_TOKEN"] = token
    else:
        env.pop("DRQUEUE_TOKEN", None)
    out = subprocess.run([_bin("drqueue"), *args], env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return out.stdout


@pytest.fixture
def shared_farm(tmp_path, monkeypatch):
    """A farm with users: an admin (token in a file), artists ana and ben."""
    monkeypatch.chdir(tmp_path)
    token_file = tmp_path / "admin.token"
    f = Farm(tmp_path, ["--admin-token-file", str(token_file)])
    f.admin = token_file.read_text().strip()
    f.tokens = {name: cli(f, "user", "add", name, "--role", "artist", token=f.admin).strip()
                for name in ("ana", "ben")}
    import drqueue
    f.client = drqueue.Client(f.url, token=f.admin)
    f.engine("web1", "--slots", "2")
    yield f
    f.stop()


def sign_in(driver, farm: Farm, token: str) -> None:
    driver.delete_all_cookies()
    driver.get(farm.url + "/signin")
    box = driver.find_element(By.NAME, "token")
    box.send_keys(token)
    box.send_keys(Keys.ENTER)
    wait(driver, "the signed-in page", lambda d: "(artist)" in d.find_element(By.ID, "me").text
         or "(admin)" in d.find_element(By.ID, "me").text)


def test_sign_in_watch_the_strip_fill_and_pause_and_resume(shared_farm, browser):
    farm = shared_farm
    # Without a session the pages send you to sign in, and nothing leaks.
    browser.get(farm.url + "/jobs")
    wait(browser, "the sign-in page", lambda d: "/signin" in d.current_url)
    shoot(browser, "signin")
    sign_in(browser, farm, farm.tokens["ana"])
    import drqueue
    ana = drqueue.Client(farm.url, token=farm.tokens["ana"])
    job = ana.submit(["sh", "-c", "echo frame {frame}; sleep 0.4"], frames="1-12", name="strip")
    browser.get(f"{farm.url}/jobs/{job.id}")
    wait(browser, "12 cells", lambda d: len(cells(d)) == 12)
    url = browser.current_url
    # The strip fills in as tasks finish, with no reload of the page.
    browser.execute_script("window.__marker = 'same page'")
    wait(browser, "every cell done", lambda d: all("done" in c for c in cells(d)))
    assert browser.execute_script("return window.__marker") == "same page"
    assert browser.current_url == url
    shoot(browser, "job")
    # Pause and resume from the page; the CLI sees each.
    job2 = ana.submit(["sleep", "30"], frames="1-4", name="long")
    browser.get(f"{farm.url}/jobs/{job2.id}")
    click(browser, "the pause button", "[data-action=pause]")
    wait(browser, "the resume button", lambda d: d.find_elements(By.CSS_SELECTOR, "[data-action=resume]"))
    assert '"status": "paused"' in cli(farm, "show", str(job2.id), "--json", token=farm.admin).replace('":"', '": "')
    click(browser, "the resume button", "[data-action=resume]")
    wait(browser, "the pause button again", lambda d: d.find_elements(By.CSS_SELECTOR, "[data-action=pause]"))
    shown = cli(farm, "show", str(job2.id), "--json", token=farm.admin)
    assert '"paused"' not in shown.split('"status"')[1][:20]
    job2.cancel()
    # The other pages, for the record.
    for path, name in (("/", "farm"), ("/jobs", "jobs"), ("/engines", "engines"), ("/limits", "limits")):
        browser.get(farm.url + path)
        wait(browser, f"the {name} page", lambda d: d.find_elements(By.CSS_SELECTOR, "main h1"))
        time.sleep(0.5)
        shoot(browser, name)
    sign_in(browser, farm, farm.admin)
    browser.get(farm.url + "/users")
    wait(browser, "the audit trail", lambda d: "Audit trail" in d.find_element(By.TAG_NAME, "main").text)
    shoot(browser, "users")


def test_an_artist_cannot_touch_another_users_job(shared_farm, browser):
    farm = shared_farm
    import drqueue
    ben = drqueue.Client(farm.url, token=farm.tokens["ben"])
    theirs = ben.submit(["sleep", "30"], frames="1-2", name="bens", paused=True)
    sign_in(browser, farm, farm.tokens["ana"])
    browser.get(f"{farm.url}/jobs/{theirs.id}")
    wait(browser, "the job page", lambda d: "bens" in d.find_element(By.TAG_NAME, "h1").text)
    actions = browser.find_elements(By.CSS_SELECTOR, "[data-action]")
    assert actions == [], "no buttons on another user's job"
    assert "Only ben" in browser.find_element(By.TAG_NAME, "main").text
    # A request forged from the page's own origin, with the session and its
    # CSRF value: the server refuses it all the same.
    status = browser.execute_async_script("""
        const done = arguments[arguments.length - 1];
        const csrf = document.cookie.match(/drqueue_csrf=([^;]+)/)[1];
        fetch('/api/jobs/%d/resume', {method: 'POST', headers: {'Content-Type': 'application/json',
              'X-DrQueue-CSRF': csrf}, body: '{}'}).then(r => done(r.status));
    """ % theirs.id)
    assert status == 403
    # Without the CSRF value, even one's own job cannot be changed.
    mine = drqueue.Client(farm.url, token=farm.tokens["ana"]).submit(["true"], paused=True)
    status = browser.execute_async_script("""
        const done = arguments[arguments.length - 1];
        fetch('/api/jobs/%d/resume', {method: 'POST', headers: {'Content-Type': 'application/json'},
              body: '{}'}).then(r => done(r.status));
    """ % mine.id)
    assert status == 403
    assert farm.client.job(theirs.id).status == "paused"
    shoot(browser, "job-of-another-user")


def test_a_running_tasks_log_arrives_live(farm, browser):
    job = farm.client.submit(
        ["sh", "-c", "for i in 1 2 3 4 5 6 7 8; do echo line $i; sleep 0.5; done; echo Error: not really"],
        name="logs")
    # The engines page lists the task its engine holds, linked to the task's page.
    browser.get(f"{farm.url}/engines")
    wait(browser, "the engine's running task", lambda d: d.find_element(
        By.CSS_SELECTOR, f'a[href="/jobs/{job.id}/tasks/0"]'))
    shoot(browser, "engines-busy")
    # The page redraws with every change of the engine's tasks.
    click(browser, "the running task's link", f'a[href="/jobs/{job.id}/tasks/0"]')
    log = wait(browser, "the log", lambda d: d.find_element(By.CSS_SELECTOR, "pre.log"))
    wait(browser, "line 2", lambda d: "line 2" in log.text)
    wait(browser, "line 8, arrived without a reload", lambda d: "line 8" in log.text)
    wait(browser, "the error line, coloured", lambda d: d.find_elements(By.CSS_SELECTOR, "pre.log .error"))
    shoot(browser, "task")


def test_filter_by_owner_survives_a_reload(farm, browser):
    farm.client.submit(["true"], name="one")
    browser.get(farm.url + "/jobs")
    owner = wait(browser, "the owner filter", lambda d: d.find_element(By.NAME, "owner"))
    owner.send_keys("local")
    owner.send_keys(Keys.ENTER)
    wait(browser, "the filter in the URL", lambda d: "owner=local" in d.current_url)
    browser.refresh()
    box = wait(browser, "the owner filter", lambda d: d.find_element(By.NAME, "owner"))
    assert box.get_attribute("value") == "local"
    wait(browser, "the job row", lambda d: d.find_elements(By.CSS_SELECTOR, "tr[data-job]"))
    browser.get(farm.url + "/jobs?owner=nobody")
    wait(browser, "no rows", lambda d: "No jobs match" in d.find_element(By.TAG_NAME, "main").text)


def test_a_bulk_retry_of_a_selected_range(farm, browser):
    job = farm.client.submit(["sh", "-c", "exit 1"], frames="1-8", max_attempts=1, name="fails")
    try:
        job.wait(timeout=60)
    except Exception:
        pass
    browser.get(f"{farm.url}/jobs/{job.id}")
    wait(browser, "8 failed cells", lambda d: len(cells(d)) == 8 and all("failed" in c for c in cells(d)))
    strip = browser.find_elements(By.CSS_SELECTOR, ".strip .cell")
    ActionChains(browser).key_down(Keys.SHIFT).click(strip[2]).click(strip[5]).key_up(Keys.SHIFT).perform()
    wait(browser, "4 selected", lambda d: len(d.find_elements(By.CSS_SELECTOR, ".cell.selected")) == 4)
    click(browser, "the retry button", "[data-action=retry-selected]")
    # Tasks 2-5 run again (and fail again); the others were not touched.
    wait(browser, "the retried tasks' second attempt", lambda d: all(
        t["attempts"] == (2 if 2 <= t["index"] <= 5 else 1) for t in job.tasks()))
    shoot(browser, "job-selection")


def test_a_real_povray_frames_thumbnail_is_shown(tmp_path, monkeypatch, browser):
    povray = shutil.which("povray")
    if not povray:
        if os.environ.get("CI"):
            pytest.fail("povray is not installed (apt-get install povray)")
        pytest.skip("povray is not installed")
    monkeypatch.chdir(tmp_path)
    tools = tmp_path / "pov-bin"
    tools.mkdir()
    (tools / "povray").symlink_to(povray)
    f = Farm(tmp_path)
    try:
        f.engine("pov", extra_path=str(tools))
        scene = pathlib.Path(__file__).resolve().parents[2] / "examples" / "orbit.pov"
        (tmp_path / "frames").mkdir()
        job = f.client.submit(None, frames="1-2", preset="povray", scene=str(scene),
                              output=str(tmp_path / "frames" / "f.png"), name="pov")
        job.wait(timeout=120)
        browser.get(f"{f.url}/jobs/{job.id}")
        img = wait(browser, "a thumbnail in the filmstrip", lambda d: d.find_elements(
            By.CSS_SELECTOR, ".thumbs img"))[0]
        wait(browser, "the thumbnail decoded", lambda d: d.execute_script(
            "return arguments[0].complete && arguments[0].naturalWidth", img) > 0)
        wait(browser, "the newest frame shown", lambda d: d.execute_script(
            "const i = document.querySelector('img.newest'); return !i.hidden && i.naturalWidth") > 0)
        shoot(browser, "job-thumbnails")
    finally:
        f.stop()


def test_dependencies_are_linked_both_ways(farm, browser):
    first = farm.client.submit(["true"], name="upstream", paused=True)
    second = farm.client.submit(["true"], name="downstream", after=[first])
    browser.get(f"{farm.url}/jobs/{first.id}")
    click(browser, "the link to the job waiting on it", f'[data-dependents] a[href="/jobs/{second.id}"]')
    wait(browser, "the link back to the job it waits on", lambda d: d.find_element(
        By.CSS_SELECTOR, f'a[href="/jobs/{first.id}"]'))
    assert "downstream" in browser.title
