//! A headless Chromium driven through WebDriver (Debian's `chromium` and `chromium-driver`):
//! chromedriver started on a free loopback port for one test and stopped with it, a fantoccini
//! session on it, and what the console tests do with a page: type, choose, click, wait for a
//! condition with a bound (never a fixed sleep), and take screenshots when
//! `FOTA_CONSOLE_SCREENSHOTS` names a directory (relative to the repository), so a normal run
//! never writes into the checkout. Without chromium or chromedriver a test skips with the
//! reason printed, unless `FOTA_REQUIRE_CHROMIUM` is set (`.ci/run` sets it and installs them).

use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::elements::Element;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::json;

/// Longest a page may take to show what a test waits for.
pub const BOUND: Duration = Duration::from_secs(60);
/// Between two looks at a page while waiting.
const POLL: Duration = Duration::from_millis(100);
/// Where Debian installs them.
const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "chromedriver";
/// The window the screenshots are taken in.
const WINDOW: (u32, u32) = (1280, 860);

/// chromedriver and one browser session on it.
pub struct Browser {
    /// The session.
    pub client: Client,
    /// chromedriver, leading its own process group (with the Chromium it starts): the group is
    /// killed on drop, so a test that fails leaves no browser behind.
    driver: Child,
}

/// Whether chromium and chromedriver are installed; without them a test skips, unless CI
/// requires them.
fn present() -> bool {
    let driver = Command::new(CHROMEDRIVER)
        .arg("--version")
        .output()
        .is_ok_and(|out| out.status.success());
    let present = driver && std::path::Path::new(CHROMIUM).exists();
    if !present {
        let why =
            "chromium or chromedriver is not installed (apt-get install chromium chromium-driver)";
        assert!(std::env::var_os("FOTA_REQUIRE_CHROMIUM").is_none(), "{why}");
        eprintln!("skipped: {why}");
    }
    present
}

/// A loopback TCP port free a moment ago.
fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

impl Browser {
    /// A headless Chromium under a chromedriver of its own; `None` (the test skips) when they
    /// are not installed.
    pub async fn start() -> Option<Browser> {
        if !present() {
            return None;
        }
        let port = free_port();
        let driver = Command::new(CHROMEDRIVER)
            .args([format!("--port={port}"), "--log-level=WARNING".into()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .expect("chromedriver starts");
        let mut browser_args = vec![
            "--headless=new".to_string(),
            "--no-sandbox".into(),
            "--disable-gpu".into(),
            "--disable-dev-shm-usage".into(),
            "--force-device-scale-factor=1".into(),
            "--hide-scrollbars".into(),
            format!("--window-size={},{}", WINDOW.0, WINDOW.1),
        ];
        browser_args.push("--lang=en-US".into());
        let capabilities = json!({
            "goog:chromeOptions": { "binary": CHROMIUM, "args": browser_args },
        });
        let capabilities = capabilities.as_object().unwrap().clone();
        let url = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + BOUND;
        let client = loop {
            match ClientBuilder::native()
                .capabilities(capabilities.clone())
                .connect(&url)
                .await
            {
                Ok(client) => break client,
                Err(error) if Instant::now() < deadline => {
                    let _ = error;
                    tokio::time::sleep(POLL).await;
                }
                Err(error) => panic!("no WebDriver session within {BOUND:?}: {error}"),
            }
        };
        Some(Browser { client, driver })
    }

    /// Opens `url`.
    pub async fn open(&self, url: &str) {
        self.client.goto(url).await.expect("the page opens");
    }

    /// The element `css`, once it is there (within [`BOUND`]).
    pub async fn find(&self, css: &str) -> Element {
        self.client
            .wait()
            .at_most(BOUND)
            .every(POLL)
            .for_element(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("no `{css}` within {BOUND:?}: {e}"))
    }

    /// Types `text` into the field `css`, replacing what it held.
    pub async fn type_into(&self, css: &str, text: &str) {
        let field = self.find(css).await;
        field.clear().await.expect("the field clears");
        field
            .send_keys(text)
            .await
            .expect("the field takes the text");
    }

    /// Chooses the option whose text contains `text` in the select `css`.
    pub async fn choose(&self, css: &str, text: &str) {
        let select = self.find(css).await;
        let options = select.find_all(Locator::Css("option")).await.unwrap();
        for option in options {
            if option.text().await.unwrap().contains(text) {
                option.click().await.expect("the option is chosen");
                return;
            }
        }
        panic!("no option with {text:?} in `{css}`");
    }

    /// Clicks `css`.
    pub async fn click(&self, css: &str) {
        self.find(css).await.click().await.expect("the click lands");
    }

    /// The text of `css` (empty when it is not there).
    pub async fn text(&self, css: &str) -> String {
        match self.client.find(Locator::Css(css)).await {
            Ok(element) => element.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        }
    }

    /// Waits until the text of `css` satisfies `check` (within [`BOUND`]); returns it.
    pub async fn wait_text(&self, css: &str, what: &str, check: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + BOUND;
        loop {
            let text = self.text(css).await;
            if check(&text) {
                return text;
            }
            assert!(
                Instant::now() < deadline,
                "{what}: not within {BOUND:?}; `{css}` reads {text:?}"
            );
            tokio::time::sleep(POLL).await;
        }
    }

    /// Waits until `css`'s text contains `text`.
    pub async fn wait_for_text(&self, css: &str, text: &str) -> String {
        self.wait_text(css, &format!("{text:?} in `{css}`"), |t| t.contains(text))
            .await
    }

    /// Waits until the console's notice says `text`: its last message, read whether it still
    /// shows or hid itself again (a notice of success hides after 4 s, which the polls of a
    /// loaded machine can miss; WebDriver reads a hidden element's text as empty).
    pub async fn wait_for_notice(&self, text: &str) {
        let deadline = Instant::now() + BOUND;
        loop {
            let said = self
                .run("return document.getElementById('notice').textContent")
                .await;
            if said.as_str().is_some_and(|said| said.contains(text)) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{text:?} in the notice: not within {BOUND:?}; it reads {said}"
            );
            tokio::time::sleep(POLL).await;
        }
    }

    /// Runs `script` in the page; its value.
    pub async fn run(&self, script: &str) -> serde_json::Value {
        self.client
            .execute(script, vec![])
            .await
            .expect("the script runs")
    }

    /// Saves the page as `name`.png in the directory `FOTA_CONSOLE_SCREENSHOTS` names,
    /// when it names one.
    pub async fn screenshot(&self, name: &str) {
        let Some(dir) = std::env::var_os("FOTA_CONSOLE_SCREENSHOTS") else {
            return;
        };
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(dir);
        std::fs::create_dir_all(&dir).unwrap();
        self.run("window.scrollTo(0, 0); return true").await;
        let png = self.client.screenshot().await.expect("a screenshot");
        std::fs::write(dir.join(format!("{name}.png")), png).unwrap();
    }

    /// Ends the session and chromedriver.
    pub async fn close(mut self) {
        let _ = self.client.clone().close().await;
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // SAFETY: kill(2) with a negative pid signals that process group only: chromedriver
        // and the Chromium it started, which killing chromedriver alone leaves running.
        unsafe {
            libc::kill(-(self.driver.id() as libc::pid_t), libc::SIGKILL);
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}
