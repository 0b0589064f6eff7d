#!/usr/bin/python3
"""The env list's weight in a fresh headless Chromium: bytes transferred and the time
until the list is on screen (the page's `envs-rendered` mark). Args: URL TOKEN ROWS.
Prints one JSON line; exits non-zero over 200 KB or 300 ms."""

import json
import sys

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

URL, TOKEN, ROWS = sys.argv[1], sys.argv[2], int(sys.argv[3])
opts = webdriver.ChromeOptions()
opts.binary_location = "/usr/bin/chromium"
for a in ["--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1280,900", "--disable-dev-shm-usage"]:
    opts.add_argument(a)
driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=opts)
try:
    driver.get(URL + "/healthz")
    driver.add_cookie({"name": "envd_session", "value": TOKEN, "path": "/", "httpOnly": True, "sameSite": "Strict"})
    samples = []
    for i in range(5):
        driver.execute_cdp_cmd("Network.clearBrowserCache", {})
        driver.get(URL + "/")
        WebDriverWait(driver, 10, 0.05).until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#envs tbody tr")) >= ROWS)
        m = driver.execute_script("""
            const nav = performance.getEntriesByType('navigation')[0];
            const res = performance.getEntriesByType('resource');
            const mark = performance.getEntriesByName('envs-rendered')[0];
            return {bytes: nav.transferSize + res.reduce((a, r) => a + r.transferSize, 0),
                    ms: mark ? mark.startTime : null, requests: 1 + res.length,
                    nav: [nav.responseEnd, nav.domInteractive, nav.domContentLoadedEventStart, nav.domContentLoadedEventEnd, nav.loadEventEnd].map(Math.round),
                    slowest: res.map(r => [r.name.split('/').pop().split('?')[0], Math.round(r.startTime), Math.round(r.duration)])};""")
        samples.append(m)
    ms = sorted(s["ms"] for s in samples)
    out = {"rows": ROWS, "bytes": max(s["bytes"] for s in samples), "ms_p50": ms[len(ms) // 2], "ms_max": ms[-1],
           "requests": samples[0]["requests"], "timings": samples[-1]["slowest"], "nav": samples[-1]["nav"]}
    print(json.dumps(out), flush=True)
    assert out["bytes"] < 200_000, out
    assert out["ms_p50"] < 300, out
finally:
    driver.quit()
