//! A small WebDriver client (the W3C protocol, JSON over HTTP to `chromedriver`) driving a
//! real headless Chromium, and the real OpenID Connect provider the portal's end-to-end tests
//! sign in with (`tests/oidc/provider.mjs`, panva's `oidc-provider` run by node).
//!
//! The tests that use them are `#[ignore = "needs …"]`, so plain `cargo test` lists them as
//! ignored; asked for (`--include-ignored`), a missing tool is an error, not a skip. `.ci/run`
//! installs Chromium, ChromeDriver and the provider's packages and runs them.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use base64::Engine as _;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use crate::helpers::pause;

/// The WebDriver element reference key.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";
/// How long a wait for something on a page lasts.
const WAIT: Duration = Duration::from_secs(15);

/// Where the browser and the provider are.
pub struct Tools {
    pub chromedriver: PathBuf,
    pub chromium: PathBuf,
    pub oidc_dir: PathBuf,
}

impl Tools {
    /// The tools of a browser test. Such tests are `#[ignore]`d and run only when asked for
    /// (`cargo test -- --include-ignored`, as `.ci/run` does, after `.ci/browser.sh`); asked
    /// for, every tool must be there.
    pub fn from_env() -> Tools {
        let var = |name: &str, default: &str| {
            PathBuf::from(std::env::var(name).unwrap_or_else(|_| default.to_owned()))
        };
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let tools = Tools {
            chromedriver: var("COUNTERSIGN_CHROMEDRIVER", "/usr/bin/chromedriver"),
            chromium: var("COUNTERSIGN_CHROMIUM", "/usr/bin/chromium"),
            oidc_dir: root.join("tests/oidc"),
        };
        for p in [&tools.chromedriver, &tools.chromium] {
            assert!(
                p.exists(),
                "{} is missing: the browser test needs chromium and chromium-driver (bash .ci/browser.sh)",
                p.display()
            );
        }
        assert!(
            tools.oidc_dir.join("node_modules/oidc-provider").exists(),
            "the OIDC provider is not installed: run `npm ci --prefix tests/oidc` (bash .ci/browser.sh)"
        );
        tools
    }
}

/// A free loopback port (bound and released: chromedriver wants a number).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// One `chromedriver` process; each [`Browser`] it opens is its own Chromium with its own
/// profile, so two people can be signed in at once.
pub struct Driver {
    base: String,
    http: reqwest::Client,
    _child: Child,
    profiles: tempfile::TempDir,
    chromium: PathBuf,
}

impl Driver {
    pub async fn start(tools: &Tools) -> Driver {
        let port = free_port();
        let child = Command::new(&tools.chromedriver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("start chromedriver");
        let base = format!("http://127.0.0.1:{port}");
        let http = reqwest::Client::new();
        let mut waited = Duration::ZERO;
        loop {
            let ready = http
                .get(format!("{base}/status"))
                .send()
                .await
                .ok()
                .and_then(|r| r.status().is_success().then_some(()));
            if ready.is_some() {
                break;
            }
            assert!(waited < WAIT, "chromedriver did not start on port {port}");
            pause(Duration::from_millis(100)).await;
            waited += Duration::from_millis(100);
        }
        Driver {
            base,
            http,
            _child: child,
            profiles: tempfile::tempdir().expect("temp dir"),
            chromium: tools.chromium.clone(),
        }
    }

    /// A new headless Chromium. The flags are the ones this machine needs: no sandbox (root),
    /// and no background networking (the network is closed).
    pub async fn browser(&self, name: &str) -> Browser {
        let profile = self.profiles.path().join(name);
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "pageLoadStrategy": "normal",
            "goog:chromeOptions": {
                "binary": self.chromium,
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    "--disable-quic", "--no-first-run", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync", "--window-size=1280,1000",
                    format!("--user-data-dir={}", profile.display()),
                ],
            },
        }}});
        let res: Value = self
            .http
            .post(format!("{}/session", self.base))
            .json(&caps)
            .send()
            .await
            .expect("new session")
            .json()
            .await
            .expect("new session answer");
        let id = res["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("chromedriver did not open a session: {res}"))
            .to_owned();
        Browser {
            base: format!("{}/session/{id}", self.base),
            http: self.http.clone(),
            name: name.to_owned(),
        }
    }
}

/// One browser window, driven like a person would.
pub struct Browser {
    base: String,
    http: reqwest::Client,
    pub name: String,
}

impl Browser {
    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let mut req = self
            .http
            .request(method.clone(), format!("{}{path}", self.base));
        if let Some(b) = body {
            req = req.json(&b);
        }
        let res: Value = req
            .send()
            .await
            .unwrap_or_else(|e| panic!("{}: {method} {path}: {e}", self.name))
            .json()
            .await
            .unwrap_or_else(|e| panic!("{}: {method} {path}: not JSON: {e}", self.name));
        if let Some(err) = res["value"]["error"].as_str() {
            panic!(
                "{}: {method} {path}: {err}: {}",
                self.name,
                res["value"]["message"].as_str().unwrap_or_default()
            );
        }
        res["value"].clone()
    }

    pub async fn goto(&self, url: &str) {
        self.call(reqwest::Method::POST, "/url", Some(json!({ "url": url })))
            .await;
    }

    pub async fn url(&self) -> String {
        self.call(reqwest::Method::GET, "/url", None)
            .await
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    pub async fn source(&self) -> String {
        self.call(reqwest::Method::GET, "/source", None)
            .await
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    /// The first element matching `css`, if there is one now.
    pub async fn find_now(&self, css: &str) -> Option<String> {
        let res: Value = self
            .http
            .post(format!("{}/elements", self.base))
            .json(&json!({ "using": "css selector", "value": css }))
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        res["value"].as_array()?.first()?[ELEMENT]
            .as_str()
            .map(str::to_owned)
    }

    /// Waits for an element matching `css`.
    pub async fn find(&self, css: &str) -> String {
        let mut waited = Duration::ZERO;
        loop {
            if let Some(e) = self.find_now(css).await {
                return e;
            }
            if waited >= WAIT {
                let url = self.url().await;
                let source = self.source().await;
                panic!(
                    "{}: no {css:?} on {url} after {WAIT:?}:\n{source}",
                    self.name
                );
            }
            pause(Duration::from_millis(100)).await;
            waited += Duration::from_millis(100);
        }
    }

    pub async fn click(&self, css: &str) {
        let e = self.find(css).await;
        self.call(
            reqwest::Method::POST,
            &format!("/element/{e}/click"),
            Some(json!({})),
        )
        .await;
    }

    pub async fn type_into(&self, css: &str, text: &str) {
        let e = self.find(css).await;
        self.call(
            reqwest::Method::POST,
            &format!("/element/{e}/clear"),
            Some(json!({})),
        )
        .await;
        self.call(
            reqwest::Method::POST,
            &format!("/element/{e}/value"),
            Some(json!({ "text": text })),
        )
        .await;
    }

    pub async fn text(&self, css: &str) -> String {
        let e = self.find(css).await;
        self.call(reqwest::Method::GET, &format!("/element/{e}/text"), None)
            .await
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    /// Runs a script in the page (WebDriver's execute, which the page's CSP does not
    /// govern) and returns its value.
    pub async fn script(&self, js: &str) -> Value {
        self.call(
            reqwest::Method::POST,
            "/execute/sync",
            Some(json!({ "script": js, "args": [] })),
        )
        .await
    }

    /// Waits until the page's text contains `needle`.
    pub async fn wait_text(&self, needle: &str) {
        let mut waited = Duration::ZERO;
        loop {
            let body = self
                .script("return document.body ? document.body.innerText : ''")
                .await;
            if body.as_str().unwrap_or_default().contains(needle) {
                return;
            }
            if waited >= WAIT {
                panic!(
                    "{}: {needle:?} never appeared on {}:\n{}",
                    self.name,
                    self.url().await,
                    body.as_str().unwrap_or_default()
                );
            }
            pause(Duration::from_millis(100)).await;
            waited += Duration::from_millis(100);
        }
    }

    /// Saves a PNG of the window to `dir/name.png`.
    pub async fn screenshot(&self, dir: &Path, name: &str) {
        let b64 = self.call(reqwest::Method::GET, "/screenshot", None).await;
        let png = base64::engine::general_purpose::STANDARD
            .decode(b64.as_str().unwrap_or_default())
            .expect("a base64 screenshot");
        assert!(png.starts_with(b"\x89PNG"), "not a PNG");
        std::fs::write(dir.join(format!("{name}.png")), png).expect("write the screenshot");
    }

    pub async fn close(self) {
        let _ = self.http.delete(&self.base).send().await;
    }
}

/// The OpenID Connect provider, running until dropped.
pub struct Provider {
    pub issuer: String,
    _child: Child,
}

impl Provider {
    /// Starts `tests/oidc/provider.mjs` for one client, with the given accounts' groups.
    pub async fn start(
        tools: &Tools,
        client_id: &str,
        client_secret: &str,
        redirect_uri: &str,
        accounts: Value,
    ) -> Provider {
        let mut child = Command::new("node")
            .arg("provider.mjs")
            .current_dir(&tools.oidc_dir)
            .env("CLIENT_ID", client_id)
            .env("CLIENT_SECRET", client_secret)
            .env("REDIRECT_URI", redirect_uri)
            .env("ACCOUNTS", accounts.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("start node tests/oidc/provider.mjs");
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = BufReader::new(stdout).lines();
        let issuer = tokio::time::timeout(WAIT, async {
            while let Ok(Some(line)) = lines.next_line().await {
                if let Some(i) = line.strip_prefix("issuer ") {
                    return Some(i.to_owned());
                }
            }
            None
        })
        .await
        .ok()
        .flatten()
        .expect("the OIDC provider printed its issuer");
        // Keep reading what it prints: a closed pipe would kill it at its next line.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Provider {
            issuer,
            _child: child,
        }
    }
}
