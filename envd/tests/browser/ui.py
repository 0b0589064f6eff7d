#!/usr/bin/python3
"""The web UI in headless Chromium, as a QA engineer uses it. Run by tests/ui.rs, which
starts envd and passes: URL TOKEN OUT_DIR REDIS_PASSWORD. Every step saves a screenshot to
OUT_DIR; any browser console error fails the run (except the 422s the test provokes)."""

import json
import os
import sys
import time
import urllib.request

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import Select, WebDriverWait

URL, TOKEN, OUT, REDIS_PW = sys.argv[1:5]
os.makedirs(OUT, exist_ok=True)
DOWNLOADS = os.path.join(OUT, "downloads")
os.makedirs(DOWNLOADS, exist_ok=True)

opts = webdriver.ChromeOptions()
opts.binary_location = "/usr/bin/chromium"
for a in ["--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1280,900", "--disable-dev-shm-usage"]:
    opts.add_argument(a)
opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
opts.add_experimental_option("prefs", {"download.default_directory": DOWNLOADS, "download.prompt_for_download": False})
driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=opts)
wait = WebDriverWait(driver, 60, poll_frequency=0.1)
expected_errors = []  # substrings of console errors a step provokes on purpose
step_no = [0]


def log(msg):
    print(f"ui: {msg}", flush=True)


def check_console():
    for entry in driver.get_log("browser"):
        if entry["level"] != "SEVERE":
            continue
        if any(e in entry["message"] for e in expected_errors):
            continue
        raise AssertionError(f"browser console error: {entry['message']}")


def shot(name):
    step_no[0] += 1
    path = os.path.join(OUT, f"{step_no[0]:02d}-{name}.png")
    driver.save_screenshot(path)
    check_console()
    log(f"step {name}: ok ({path})")


def api(method, path, body=None):
    req = urllib.request.Request(URL + path, method=method, data=None if body is None else json.dumps(body).encode(),
                                 headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"})
    with urllib.request.urlopen(req) as r:
        return json.loads(r.read() or b"null")


def by(css):
    return driver.find_element(By.CSS_SELECTOR, css)


def visible_error(field):
    el = by(f'[data-error-for="{field}"]')
    return el.text if el.is_displayed() else ""


try:
    # Sign in: the list redirects to the sign-in page first.
    driver.get(URL + "/")
    wait.until(lambda d: "/login" in d.current_url)
    by("#token").send_keys(TOKEN)
    shot("sign-in")
    by("#login button[type=submit]").click()
    wait.until(lambda d: d.current_url.rstrip("/") == URL)
    session = driver.get_cookie("envd_session")
    assert session and session["httpOnly"] and session.get("sameSite") == "Strict", session

    # The catalog, then a form of every question type: show_if live, bad answers beside their fields.
    driver.get(URL + "/catalog")
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#tpl-minimal"))
    shot("catalog")
    driver.get(URL + "/catalog/typed")
    ca = by('[data-field="answers.ca"]')
    assert not ca.is_displayed(), "ca shows before flavour=tls"
    Select(by("#f-flavour")).select_by_visible_text("tls")
    wait.until(lambda d: ca.is_displayed())
    Select(by("#f-flavour")).select_by_visible_text("plain")
    wait.until(lambda d: not ca.is_displayed())
    by("#f-replicas").clear()
    by("#f-replicas").send_keys("9")
    by("#f-team").clear()
    by("#f-team").send_keys("QA!")
    expected_errors.append("/v1/envs - Failed to load resource: the server responded with a status of 422")
    by("#submit").click()
    wait.until(lambda d: visible_error("answers.replicas") and visible_error("answers.team"))
    log(f"typed errors: replicas={visible_error('answers.replicas')!r} team={visible_error('answers.team')!r}")
    shot("form-errors")
    assert api("GET", "/v1/envs") == [], "a refused create left an env"

    # minimal: a bad TTL is refused beside its field, then the fixed form creates the env.
    driver.get(URL + "/catalog/minimal")
    by("#f-name").send_keys("ui-env-with-a-long-name-0123456789abcdef")
    by("#f-ttl").send_keys("3 fortnights")
    by("#submit").click()
    wait.until(lambda d: visible_error("ttl"))
    assert api("GET", "/v1/envs") == [], "a refused create left an env"
    by("#f-ttl").clear()
    by("#f-ttl").send_keys("30m")
    by("#submit").click()
    try:
        wait.until(lambda d: "/envs/" in d.current_url)
    except Exception:
        shot("create-stuck")
        raise AssertionError("create did not go to the env page: " + by("#create").text)
    env_id = driver.current_url.rsplit("/", 1)[1]
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, '#pods [data-pod="redis"]'))
    # The first recorded steps on the timeline, while the pods come up.
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#timeline svg rect"))
    shot("progress")
    wait.until(lambda d: by("#env-state").text in ("ready", "failed"))
    assert by("#env-state").text == "ready", by("#failure-cause").text
    wait.until(lambda d: "ready" in by('#pods [data-pod="redis"] .stage').text)
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#timeline svg rect.tl-pod"))
    shot("env-ready-timeline")

    # The list shows it with its node IP.
    node_ip = api("GET", f"/v1/envs/{env_id}")["node_ip"]
    driver.get(URL + "/")
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, f'tr[data-id="{env_id}"]'))
    row = by(f'tr[data-id="{env_id}"]')
    assert node_ip in row.text, row.text
    shot("list")

    # The web shell: redis-cli ping answers PONG.
    driver.get(URL + f"/envs/{env_id}")
    wait.until(lambda d: by("#env-state").text == "ready")
    by('[data-tab="shell"]').click()
    Select(by("#shell-pod")).select_by_visible_text("redis")
    by("#shell-connect").click()
    wait.until(lambda d: "connected" in by("#shell-status").text)
    time.sleep(0.5)
    actions = webdriver.ActionChains(driver)
    actions.send_keys(f"redis-cli -a {REDIS_PW} --no-auth-warning ping" + Keys.ENTER).perform()
    wait.until(lambda d: "PONG" in by("#terminal").text)
    shot("shell")

    # Extend, then delete: the archive downloads once it is gone.
    before = api("GET", f"/v1/envs/{env_id}")["expires_at"]
    Select(by("#extend-ttl")).select_by_visible_text("1h")
    by("#extend").click()
    wait.until(lambda d: api("GET", f"/v1/envs/{env_id}")["expires_at"] > before)
    by("#delete").click()
    driver.switch_to.alert.accept()
    wait.until(lambda d: by("#env-state").text == "gone")
    wait.until(lambda d: by("#archive").is_displayed())
    shot("gone")
    by("#archive").click()
    deadline = time.time() + 30
    while time.time() < deadline:
        done = [f for f in os.listdir(DOWNLOADS) if f.endswith(".tar.gz")]
        if done and os.path.getsize(os.path.join(DOWNLOADS, done[0])) > 0:
            break
        time.sleep(0.2)
    else:
        raise AssertionError("the archive did not download")
    with open(os.path.join(DOWNLOADS, done[0]), "rb") as f:
        assert f.read(2) == b"\x1f\x8b", "the archive is not gzip"
    log(f"archive downloaded: {done[0]}")

    # Jobs (admin): the schedules, and a dry run of the sweep that reports what it found.
    driver.get(URL + "/jobs")
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, 'tr[data-job="sweep"]'))
    by('tr[data-job="sweep"] button:last-child').click()
    wait.until(lambda d: by("#job-report").is_displayed() and '"dry_run": true' in by("#job-report").text)
    shot("jobs")
    check_console()
    print("ui: all steps passed", flush=True)
finally:
    driver.quit()
