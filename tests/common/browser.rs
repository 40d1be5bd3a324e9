//! A real headless Chromium, driven through Debian's chromedriver by
//! fantoccini (WebDriver), for the dashboard's tests and bench. Each
//! `Browser` owns its chromedriver process group (Chromium included), a
//! profile and a download dir, all removed on drop, also after a panic.
#![allow(dead_code)]

use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{json, Value};

/// Chromium and its driver, as Debian installs them (`tests/setup.sh`).
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const CHROMIUM: &str = "/usr/bin/chromium";

/// One browser session.
pub struct Browser {
    pub client: Client,
    driver: Child,
    /// Files the page downloads land here.
    pub downloads: PathBuf,
    // Dropped last: the profile and downloads.
    dir: tempfile::TempDir,
}

impl Browser {
    /// Starts chromedriver on a free port and opens a headless Chromium
    /// `width`×`height` (CSS pixels). Panics, naming what to install, when
    /// Chromium or its driver is missing: the test suite needs them.
    pub async fn start(width: u32, height: u32) -> Browser {
        for tool in [CHROMEDRIVER, CHROMIUM] {
            assert!(
                Path::new(tool).exists(),
                "{tool} is missing: run `bash tests/setup.sh` (installs chromium and chromium-driver)"
            );
        }
        let dir = tempfile::tempdir().expect("browser temp dir");
        let downloads = dir.path().join("downloads");
        std::fs::create_dir_all(&downloads).expect("download dir");
        let port = super::agent::free_port();
        let log = std::fs::File::create(dir.path().join("chromedriver.log")).expect("driver log");
        let driver = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log handle"))
            .stderr(log)
            // Its own process group: dropping the browser kills Chromium too.
            .process_group(0)
            .spawn()
            .expect("start chromedriver");
        let url = format!("http://127.0.0.1:{port}");
        let capabilities = json!({
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": CHROMIUM,
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    "--no-first-run", "--disable-extensions", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync", "--metrics-recording-only",
                    format!("--window-size={width},{height}"),
                    format!("--user-data-dir={}", dir.path().join("profile").display()),
                ],
                "prefs": {
                    "download.default_directory": downloads.display().to_string(),
                    "download.prompt_for_download": false,
                },
            },
        });
        let Value::Object(capabilities) = capabilities else {
            unreachable!("a JSON object literal")
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        let client = loop {
            let connector = hyper_util::client::legacy::connect::HttpConnector::new();
            match ClientBuilder::new(connector)
                .capabilities(capabilities.clone())
                .connect(&url)
                .await
            {
                Ok(client) => break client,
                Err(_) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => {
                    let log = std::fs::read_to_string(dir.path().join("chromedriver.log"))
                        .unwrap_or_default();
                    panic!("no WebDriver session within 30 s: {e}\nchromedriver log:\n{log}");
                }
            }
        };
        Browser {
            client,
            driver,
            downloads,
            dir,
        }
    }

    pub async fn goto(&self, url: &str) {
        self.client.goto(url).await.expect("navigate");
    }

    /// Runs `script` (a function body; `arguments[i]` are `args`) in the
    /// page and returns what it returned.
    pub async fn js(&self, script: &str, args: Vec<Value>) -> Value {
        self.client
            .execute(script, args)
            .await
            .unwrap_or_else(|e| panic!("script failed: {e}\n{script}"))
    }

    /// Polls `script` until it returns something truthy (not null, false,
    /// 0 or ""); that value, or a panic naming `what` at the deadline.
    pub async fn wait_js(&self, what: &str, timeout: Duration, script: &str) -> Value {
        let deadline = Instant::now() + timeout;
        let mut last = Value::Null;
        loop {
            if let Ok(value) = self.client.execute(script, vec![]).await {
                let truthy = match &value {
                    Value::Null => false,
                    Value::Bool(b) => *b,
                    Value::Number(n) => n.as_f64() != Some(0.0),
                    Value::String(s) => !s.is_empty(),
                    _ => true,
                };
                if truthy {
                    return value;
                }
                last = value;
            }
            if Instant::now() > deadline {
                let text = self
                    .client
                    .execute("return document.body.innerText", vec![])
                    .await
                    .unwrap_or_default();
                panic!(
                    "timed out after {timeout:?} waiting for {what} (last: {last})\npage:\n{text}"
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The element matching `css`, waited for (bounded).
    pub async fn element(&self, css: &str) -> fantoccini::elements::Element {
        self.client
            .wait()
            .at_most(Duration::from_secs(15))
            .for_element(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("no element {css} within 15 s: {e}"))
    }

    /// Clicks the element matching `css`; found again if the page redrew
    /// it between the lookup and the click (a live view does).
    pub async fn click(&self, css: &str) {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let element = self.element(css).await;
            match element.click().await {
                Ok(()) => return,
                Err(e) if e.to_string().contains("stale element") && Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(e) => panic!("click {css}: {e}"),
            }
        }
    }

    /// Replaces the value of the input matching `css` by typing `text`.
    pub async fn type_into(&self, css: &str, text: &str) {
        let input = self.element(css).await;
        input
            .clear()
            .await
            .unwrap_or_else(|e| panic!("clear {css}: {e}"));
        input
            .send_keys(text)
            .await
            .unwrap_or_else(|e| panic!("type into {css}: {e}"));
    }

    /// Marks this page load; [`Browser::same_page`] is true until a reload.
    pub async fn mark_page(&self) {
        self.js("window.__droverTestMark = 'kept'; return true", vec![])
            .await;
    }

    /// No reload since [`Browser::mark_page`].
    pub async fn same_page(&self) -> bool {
        self.js("return window.__droverTestMark === 'kept'", vec![])
            .await
            .as_bool()
            .unwrap_or(false)
    }

    /// Saves a PNG of the viewport as `NAME.png` in the screenshot dir
    /// (`DROVER_SCREENSHOTS`, default `target/screenshots`); its path.
    pub async fn screenshot(&self, name: &str) -> PathBuf {
        let png = self.client.screenshot().await.expect("screenshot");
        let dir = std::env::var_os("DROVER_SCREENSHOTS")
            .map(PathBuf::from)
            .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target/screenshots"));
        std::fs::create_dir_all(&dir).expect("screenshot dir");
        let path = dir.join(format!("{name}.png"));
        std::fs::write(&path, png).expect("write screenshot");
        path
    }

    /// Every URL the page loaded or called (resource timing), for the
    /// same-origin check.
    pub async fn requested_urls(&self) -> Vec<String> {
        let urls = self
            .js(
                "return performance.getEntriesByType('resource').map(e => e.name)",
                vec![],
            )
            .await;
        urls.as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // The session is not closed politely (Drop cannot wait); the group
        // kill ends chromedriver and every Chromium process it started.
        if let Ok(pid) = libc::pid_t::try_from(self.driver.id()) {
            // SAFETY: kill(2) on the process group of our own unreaped
            // child, which it leads (process_group(0)).
            unsafe {
                libc::kill(-pid, libc::SIGKILL);
            }
        }
        let _ = self.driver.wait();
    }
}
