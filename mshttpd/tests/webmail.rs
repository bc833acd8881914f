//! The webmail page end to end: headless Chromium (Debian's `chromium` and `chromium-driver`,
//! driven by Selenium from Python) uses the page the real `mshttpd` serves, as a person
//! would: logs in, opens folders, reads plain and HTML mail (sanitised, remote images only
//! after "Show images"), downloads an attachment, flags, moves, deletes, searches, writes a
//! draft with an attachment and sends it through EmailSubmission to an SMTP relay, and sees
//! mail the real `lmtpd` delivers during the test appear without a reload. The store is then
//! checked through store-client, and the relay for what it was handed.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use store_client::{Flag, SearchKey, StoreClient};

/// Starts `bin --root ROOT --listen 127.0.0.1:0` and reads its `listening on ADDR` line.
fn start(bin: &Path, root: &Path) -> testkit::Spawned {
    let mut cmd = Command::new(bin);
    cmd.arg("--root")
        .arg(root)
        .args(["--listen", "127.0.0.1:0"]);
    testkit::Spawned::start(cmd, 1)
}

/// The interpreter with the PyPI test packages (selenium).
fn python() -> PathBuf {
    testkit::python()
}

/// One message the relay stand-in accepted.
#[derive(Debug, Clone)]
struct Relayed {
    from: String,
    rcpts: Vec<String>,
    data: String,
}

/// The SMTP relay stand-in EmailSubmission hands mail to: accepts every message (RFC 5321's
/// minimal command set) and keeps it for the test to inspect.
fn smtp_sink() -> (SocketAddr, Arc<Mutex<Vec<Relayed>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind smtp sink");
    let addr = listener.local_addr().expect("sink address");
    let got = Arc::new(Mutex::new(Vec::new()));
    let store = got.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            let store = store.clone();
            std::thread::spawn(move || {
                let _ = smtp_session(conn, &store);
            });
        }
    });
    (addr, got)
}

fn smtp_session(conn: TcpStream, store: &Mutex<Vec<Relayed>>) -> std::io::Result<()> {
    conn.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut w = conn.try_clone()?;
    let mut r = BufReader::new(conn);
    w.write_all(b"220 relay.test ESMTP sink\r\n")?;
    let (mut from, mut rcpts) = (String::new(), Vec::new());
    loop {
        let mut line = String::new();
        if r.read_line(&mut line)? == 0 {
            return Ok(());
        }
        let verb = line.get(..4).unwrap_or("").to_ascii_uppercase();
        let arg = |prefix: &str| {
            line[prefix.len().min(line.len())..]
                .trim()
                .trim_start_matches('<')
                .split('>')
                .next()
                .unwrap_or("")
                .to_string()
        };
        let reply: &[u8] = match verb.as_str() {
            "EHLO" => b"250-relay.test\r\n250-8BITMIME\r\n250 SMTPUTF8\r\n",
            "HELO" | "NOOP" => b"250 OK\r\n",
            "RSET" => {
                (from, rcpts) = (String::new(), Vec::new());
                b"250 OK\r\n"
            }
            "MAIL" => {
                from = arg("MAIL FROM:");
                b"250 OK\r\n"
            }
            "RCPT" => {
                rcpts.push(arg("RCPT TO:"));
                b"250 OK\r\n"
            }
            "DATA" => {
                w.write_all(b"354 go ahead\r\n")?;
                let mut data = String::new();
                loop {
                    let mut l = String::new();
                    if r.read_line(&mut l)? == 0 {
                        return Ok(());
                    }
                    if l == ".\r\n" || l == ".\n" {
                        break;
                    }
                    data.push_str(l.strip_prefix('.').unwrap_or(&l));
                }
                store.lock().expect("sink lock").push(Relayed {
                    from: std::mem::take(&mut from),
                    rcpts: std::mem::take(&mut rcpts),
                    data,
                });
                b"250 OK queued\r\n"
            }
            "QUIT" => {
                w.write_all(b"221 bye\r\n")?;
                return Ok(());
            }
            _ => b"502 5.5.2 not implemented\r\n",
        };
        w.write_all(reply)?;
    }
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

#[test]
fn webmail_in_headless_chromium() {
    for tool in ["/usr/bin/chromium", "/usr/bin/chromedriver"] {
        assert!(
            Path::new(tool).exists(),
            "{tool} is missing: install Debian's chromium and chromium-driver (tests/debian-packages.txt)"
        );
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path();
    std::fs::create_dir_all(root.join("config")).expect("config dir");
    testkit::add_users(root, &["joe"]);
    rt().block_on(async {
        let client = StoreClient::open(root).await.expect("store");
        let s = client.session_for("joe").await.expect("session");
        s.create("Projects", None).await.expect("create Projects");
    });
    let (relay, relayed) = smtp_sink();
    std::fs::write(
        root.join("config/msg.conf"),
        format!("local.service.http.smtprelay = {relay}\n"),
    )
    .expect("msg.conf");

    let lmtpd = start(&testkit::binary("lmtpd"), root);
    let http = start(Path::new(env!("CARGO_BIN_EXE_mshttpd")), root);

    let script = tempfile::NamedTempFile::new().expect("script file");
    std::fs::write(script.path(), BROWSER_SCRIPT).expect("write script");
    // Output goes to files so a wedged browser can be killed after a bound, not waited on.
    let stdout_file = tempfile::NamedTempFile::new().expect("stdout file");
    let stderr_file = tempfile::NamedTempFile::new().expect("stderr file");
    let mut child = Command::new(python())
        .arg(script.path())
        .arg(format!("http://{}", http.addr(0)))
        .arg(lmtpd.addr(0).ip().to_string())
        .arg(lmtpd.addr(0).port().to_string())
        .stdout(stdout_file.reopen().expect("stdout"))
        .stderr(stderr_file.reopen().expect("stderr"))
        // Its own process group, so chromedriver and Chromium go with it on a timeout.
        .process_group(0)
        .spawn()
        .expect("run the browser script");
    let started = Instant::now();
    let deadline = started + BROWSER_TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for the browser script") {
            break Some(status);
        }
        if Instant::now() > deadline {
            let _ = Command::new("kill")
                .args(["-KILL", "--"])
                .arg(format!("-{}", child.id()))
                .status();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let stdout = std::fs::read_to_string(stdout_file.path()).unwrap_or_default();
    let stderr = std::fs::read_to_string(stderr_file.path()).unwrap_or_default();
    assert!(
        status.is_some_and(|s| s.success()) && stdout.contains("DONE"),
        "browser script failed ({}):\nstdout:\n{stdout}\nstderr:\n{stderr}",
        status.map_or(format!("killed after {BROWSER_TIMEOUT:?}"), |s| format!(
            "{s} after {:?}",
            started.elapsed()
        ))
    );

    // What the clicks did, as the store sees it.
    rt().block_on(async {
        let client = StoreClient::open(root).await.expect("store");
        let s = client.session_for("joe").await.expect("session");
        let count = |f: &'static str| {
            let s = &s;
            async move { s.status(f).await.expect("status").messages }
        };
        // Six delivered, one moved, one deleted; then one live, one reply and a page's worth.
        assert_eq!(count("INBOX").await, 56, "INBOX");
        assert_eq!(count("Projects").await, 1, "Projects");
        assert_eq!(count("Trash").await, 0, "Trash");
        assert_eq!(count("Drafts").await, 0, "Drafts");
        assert_eq!(count("Sent").await, 2, "Sent");
        let inbox = s.select("INBOX", true).await.expect("select");
        let flagged = inbox
            .search(&SearchKey::Flag(Flag::Flagged))
            .await
            .expect("search");
        assert_eq!(flagged.len(), 1, "one flagged message");
    });

    let relayed = relayed.lock().expect("sink lock").clone();
    assert_eq!(relayed.len(), 2, "two messages relayed: {relayed:?}");
    let m = &relayed[0];
    assert_eq!(m.rcpts, ["friend@example.net"], "{m:?}");
    assert!(m.from.contains("joe"), "envelope sender {:?}", m.from);
    for needle in ["Subject: Plans for Friday", "See you at noon.", "agenda-"] {
        assert!(m.data.contains(needle), "{needle:?} not in {}", m.data);
    }
    let reply = &relayed[1];
    assert_eq!(reply.rcpts, ["ann@example.com"], "{reply:?}");
    for needle in [
        "Subject: Re: Welcome aboard",
        "In-Reply-To: <welcome@test>",
        "Glad to hear it.",
        "> the store is ready.",
    ] {
        assert!(
            reply.data.contains(needle),
            "{needle:?} not in {}",
            reply.data
        );
    }
}

/// How long the browser session may take (it needs about 25 s) before it is killed.
const BROWSER_TIMEOUT: Duration = Duration::from_secs(150);

/// The browser session: argv = base URL, LMTP host, LMTP port.
const BROWSER_SCRIPT: &str = r#####"
import sys, os, time, json, smtplib, threading, tempfile, http.server
from email.message import EmailMessage
from selenium import webdriver
from selenium.common.exceptions import TimeoutException, StaleElementReferenceException, WebDriverException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import WebDriverWait, Select

base, lmtp_host, lmtp_port = sys.argv[1], sys.argv[2], int(sys.argv[3])

def step(what):
    print('step:', what, flush=True)

# Remote images point here, so the test sees whether the browser fetched them.
pixel_hits = []
class Pixel(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        pixel_hits.append(self.path)
        gif = bytes.fromhex('47494638396101000100800000ffffff00000021f90401000000002c00000000010001000002024401003b')
        self.send_response(200)
        self.send_header('Content-Type', 'image/gif')
        self.send_header('Content-Length', str(len(gif)))
        self.end_headers()
        self.wfile.write(gif)
    def log_message(self, *a):
        pass
pixel = http.server.ThreadingHTTPServer(('127.0.0.1', 0), Pixel)
threading.Thread(target=pixel.serve_forever, daemon=True).start()
pixel_url = 'http://127.0.0.1:%d/pixel.gif' % pixel.server_address[1]

GIF = bytes.fromhex('47494638396101000100800000ffffff00000021f90401000000002c00000000010001000002024401003b')

def message(subject, body, html=None, attachment=None, sender='ann@example.com', headers=()):
    m = EmailMessage()
    m['From'] = sender
    m['To'] = 'joe@example.com'
    m['Subject'] = subject
    for k, v in headers:
        m[k] = v
    m.set_content(body)
    if html:
        m.add_alternative(html, subtype='html')
        # An inline image the HTML refers to by Content-ID (multipart/related).
        m.get_payload()[1].add_related(GIF, 'image', 'gif', cid='<logo@test>')
    if attachment:
        name, data = attachment
        m.add_attachment(data.encode(), maintype='text', subtype='csv', filename=name)
    return m.as_bytes()

def deliver(*args, **kw):
    deliver_many([message(*args, **kw)])

def deliver_many(msgs):
    s = smtplib.LMTP(lmtp_host, lmtp_port)
    for m in msgs:
        s.sendmail('ann@example.com', ['joe@example.com'], m)
    s.quit()

step('deliver the first messages over LMTP')
deliver('Welcome aboard', 'Hello Joe,\nthe store is ready.\n', headers=[('Message-ID', '<welcome@test>')])
deliver('Quarterly numbers', 'The figures are attached.\n', attachment=('report.csv', 'q,amount\n1,100\n'))
deliver('Newsletter', 'plain version', html=(
    '<h1 onclick="document.title=1">Big news</h1><p id="p">Read <b>all</b> about it<img id="logo" src="cid:logo@test">'
    '<img id="tracker" src="%s"></p><script>document.title="pwned"</script>'
    '<form action="https://evil.example/"><input name="x"></form>'
    '<a id="bad" href="javascript:alert(1)">bad link</a>') % pixel_url)
deliver('Move me', 'This one goes to Projects.\n')
deliver('Delete me', 'This one goes to the Trash.\n')
deliver('Needle in haystack', 'There is a zebrafinch in here.\n', sender='bob@example.com')

opts = webdriver.ChromeOptions()
opts.binary_location = '/usr/bin/chromium'
for a in ('--headless=new', '--no-sandbox', '--disable-dev-shm-usage', '--disable-gpu',
          '--window-size=1280,900', '--no-first-run', '--disable-extensions'):
    opts.add_argument(a)
opts.set_capability('goog:loggingPrefs', {'browser': 'ALL'})
d = webdriver.Chrome(service=Service('/usr/bin/chromedriver'), options=opts)
d.set_script_timeout(20)

def settled(cond):
    # An element found just before the page replaced it: Chrome reports it stale, or (while
    # the document itself is being swapped, as at log-out) as a node that "does not belong
    # to the document". Either way, look again.
    try:
        return cond()
    except WebDriverException as e:
        if 'does not belong to the document' in str(e):
            return False
        raise

def wait(cond, what, timeout=15):
    try:
        return WebDriverWait(d, timeout, poll_frequency=0.1, ignored_exceptions=[StaleElementReferenceException]).until(lambda _: settled(cond))
    except TimeoutException:
        d.save_screenshot(os.path.join(tempfile.gettempdir(), 'webmail-failure.png'))
        raise AssertionError('timed out waiting for: ' + what)

def q(css):
    return d.find_element(By.CSS_SELECTOR, css)
def qs(css):
    return d.find_elements(By.CSS_SELECTOR, css)
def rows():
    return d.execute_script("return [...document.querySelectorAll('#list .stext')].map(e => e.textContent)")
def click_row(subject):
    # The list re-renders on every push; a row found a moment ago may be gone.
    def attempt():
        for r in qs('#list li[role=option]'):
            if r.find_element(By.CSS_SELECTOR, '.stext').text == subject:
                r.click()
                return True
        return False
    wait(attempt, 'row %r to click' % subject)
def row_class(subject):
    return d.execute_script("return [...document.querySelectorAll('#list li[role=option]')].find(r => r.querySelector('.stext').textContent === arguments[0])?.className ?? ''", subject)
def folder(name):
    for b in qs('#tree button.folder'):
        if b.find_element(By.CSS_SELECTOR, '.name').text == name:
            return b
    raise AssertionError('no folder ' + name)
def listed():
    return q('#list').get_attribute('aria-busy') == 'false'
def open_folder(name):
    wait(lambda: folder(name).click() or True, 'folder %s to click' % name)
    wait(lambda: q('#list-title').text == name and listed(), 'folder %s listed' % name)
def status():
    return q('#status').text
def keys(*k):
    webdriver.ActionChains(d).send_keys(*k).perform()
def check(cond, what):
    if not cond:
        raise AssertionError(what)

try:
    step('a wrong password is refused')
    d.get(base + '/')
    wait(lambda: q('#username').is_displayed(), 'login form')
    q('#username').send_keys('joe')
    q('#password').send_keys('wrong' + Keys.ENTER)
    wait(lambda: q('#login-error').is_displayed(), 'login error')

    step('log in')
    q('#username').clear()
    q('#username').send_keys('joe')
    q('#password').send_keys('pw' + Keys.ENTER)
    wait(lambda: d.execute_script('return document.body.dataset.ready') == 'true', 'the app to start')
    wait(lambda: folder('Inbox').get_attribute('aria-label') == 'Inbox, 6 unread', 'Inbox, 6 unread')
    check(len(rows()) == 6, 'six rows: %r' % rows())
    # Every control has a name a screen reader can read out.
    unnamed = d.execute_script('''
        return [...document.querySelectorAll('input, select, textarea, button, [role=listbox]')]
          .filter((e) => !(e.labels && e.labels.length) && !e.getAttribute('aria-label')
                         && !e.getAttribute('aria-labelledby') && !e.textContent.trim())
          .map((e) => e.outerHTML.slice(0, 80));''')
    check(unnamed == [], 'controls without an accessible name: %r' % unnamed)
    # Keyboard focus is visible.
    d.execute_script('document.activeElement.blur()')
    keys(Keys.TAB, Keys.TAB)
    focused = d.execute_script('const s = getComputedStyle(document.activeElement); return [document.activeElement.id, s.outlineStyle, s.outlineWidth]')
    check(focused[0] == 'compose' and focused[1] != 'none' and focused[2] != '0px', 'focus ring on %r' % (focused,))
    # Reloading would lose this; live updates must keep it.
    d.execute_script('window.__noReload = 42')

    step('open a folder')
    open_folder('Sent')
    check(rows() == [], 'Sent is empty')
    open_folder('Inbox')
    check(len(rows()) == 6, 'six rows again')

    step('read a message with the keyboard')
    d.execute_script("document.querySelector('#list').focus()")
    idx = rows().index('Welcome aboard')
    keys('k' * 10 + 'j' * idx + Keys.ENTER)
    wait(lambda: 'the store is ready' in q('#message').text, 'message body')
    check(q('#subject').text == 'Welcome aboard', 'subject shown')
    wait(lambda: folder('Inbox').get_attribute('aria-label') == 'Inbox, 5 unread', 'unread count drops to 5')
    check('unread' not in row_class('Welcome aboard'), 'row no longer bold')
    keys('u')
    wait(lambda: folder('Inbox').get_attribute('aria-label') == 'Inbox, 6 unread', 'u marks it unread again')
    wait(lambda: 'unread' in row_class('Welcome aboard') and not q('#toolbar').is_displayed(), 'back in the list, bold')
    keys(Keys.ENTER)
    wait(lambda: q('#subject').text == 'Welcome aboard', 'Enter opens it again')
    keys(Keys.ESCAPE)
    wait(lambda: not q('#toolbar').is_displayed(), 'Escape closes it')
    wait(lambda: folder('Inbox').get_attribute('aria-label') == 'Inbox, 5 unread', 'read again')

    step('HTML is sanitised and remote images blocked until allowed')
    click_row('Newsletter')
    wait(lambda: qs('iframe.body-html'), 'html frame')
    frame = q('iframe.body-html')
    src = frame.get_attribute('srcdoc')
    for bad in ('<script', 'onclick', 'javascript:', '<form', '<input', pixel_url):
        check(bad not in src, '%r stripped from %r' % (bad, src))
    check('allow-scripts' not in frame.get_attribute('sandbox'), 'sandbox forbids scripts')
    d.switch_to.frame(frame)
    wait(lambda: 'Big news' in d.find_element(By.TAG_NAME, 'body').text, 'html body rendered')
    d.switch_to.default_content()
    check(d.title != 'pwned', 'no script ran')
    d.switch_to.frame(frame)
    wait(lambda: d.execute_script("const i = document.getElementById('logo'); return i && i.complete && i.naturalWidth === 1"), 'inline cid: image shown')
    d.switch_to.default_content()
    time.sleep(0.5)
    check(pixel_hits == [], 'remote image fetched before allowed: %r' % pixel_hits)
    q('button.show-images').click()
    wait(lambda: pixel_hits, 'remote image fetched once allowed')

    step('the sanitiser against known attack vectors')
    vectors = [
        '<img src=x onerror=alert(1)>', '<svg><script>alert(1)</script></svg>', '<svg onload=alert(1)>',
        '<a href="JaVaScRiPt:alert(1)">a</a>', '<a href=" javascript:alert(1)">a</a>',
        '<a href="java&#x09;script:alert(1)">a</a>', '<a href="data:text/html,<script>alert(1)</script>">a</a>',
        '<iframe srcdoc="<script>alert(1)</script>"></iframe>', '<object data="http://track.example/o"></object>',
        '<embed src="http://track.example/e">', '<math><mi xlink:href="javascript:alert(1)">m</mi></math>',
        '<style>@import url(http://track.example/s.css);</style>', '<div style="background:url(http://track.example/b)">d</div>',
        '<base href="http://track.example/">', '<meta http-equiv="refresh" content="0;url=http://track.example/">',
        '<form action="http://track.example/f"><button formaction="javascript:alert(1)">b</button></form>',
        '<img srcset="http://track.example/1x.png 1x">', '<table background="http://track.example/t"><tr><td>t</td></tr></table>',
        '<body onload=alert(1)>b</body>', '<details open ontoggle=alert(1)>x</details>', '<input autofocus onfocus=alert(1)>',
        '<link rel=stylesheet href="http://track.example/l.css">', '<video poster="http://track.example/p"></video>',
        '<img src="data:image/svg+xml,<svg onload=alert(1)>">', '<noscript><p title="</noscript><img src=x onerror=alert(1)>"></noscript>',
        '<p title="x" onclick="alert(1)" onmouseover="alert(1)">p</p>', '<template><img src=x onerror=alert(1)></template>',
        '<img src="http://track.example/i.png">', '<div style="background-image: image-set(\'http://track.example/s\' 1x)">s</div>',
    ]
    problems = d.execute_async_script('''
        const [vectors, done] = arguments;
        import('/assets/sanitize.js').then(({ sanitize }) => {
          const bad = [];
          for (const v of vectors) {
            const { html } = sanitize(v);
            const doc = new DOMParser().parseFromString(html, 'text/html');
            for (const e of doc.body.querySelectorAll('*')) {
              if (/^(script|iframe|object|embed|svg|math|base|meta|link|form|input|button|video|template|noscript)$/.test(e.localName)) bad.push([v, e.localName]);
              for (const a of e.attributes) {
                if (/^on/i.test(a.name) || /^\\s*(javascript|data:text|vbscript)/i.test(a.value)) bad.push([v, a.name + '=' + a.value]);
              }
              if (e.localName === 'img' && e.hasAttribute('src') && !/^data:image\\/(png|gif|jpeg|webp);/.test(e.getAttribute('src'))) bad.push([v, 'img src ' + e.getAttribute('src')]);
            }
            if (html.includes('track.example') || /javascript:/i.test(html)) bad.push([v, html]);
          }
          done(bad);
        }, (e) => done([['import', String(e)]]));
    ''', vectors)
    check(problems == [], 'sanitiser let through: %r' % problems)

    step('download an attachment')
    click_row('Quarterly numbers')
    wait(lambda: qs('a.attachment'), 'attachment link')
    link = q('a.attachment')
    check(link.text == 'report.csv', 'attachment name %r' % link.text)
    got = d.execute_async_script(
        'const done = arguments[1]; fetch(arguments[0]).then(r => r.text()).then(done, e => done("ERR " + e))',
        link.get_attribute('href'))
    check(got.replace('\r\n', '\n') == 'q,amount\n1,100\n', 'attachment content %r' % got)

    step('flag a message')
    q('#flag').click()
    wait(lambda: 'flagged' in row_class('Quarterly numbers'), 'flag shown in the list')

    step('move a message')
    click_row('Move me')
    wait(lambda: q('#subject').text == 'Move me', 'Move me open')
    Select(q('#move')).select_by_visible_text('Projects')
    wait(lambda: 'Move me' not in rows(), 'Move me leaves the Inbox')
    open_folder('Projects')
    wait(lambda: rows() == ['Move me'], 'Move me in Projects')

    step('delete a message')
    open_folder('Inbox')
    click_row('Delete me')
    wait(lambda: q('#subject').text == 'Delete me', 'Delete me open')
    keys('#')
    wait(lambda: 'Delete me' not in rows(), 'Delete me leaves the Inbox')
    open_folder('Trash')
    wait(lambda: rows() == ['Delete me'], 'Delete me in the Trash')
    click_row('Delete me')
    wait(lambda: q('#subject').text == 'Delete me', 'Delete me open in the Trash')
    q('#delete').click()
    d.switch_to.alert.accept()
    wait(lambda: rows() == [], 'Trash emptied')

    step('search')
    keys('/')
    check(d.switch_to.active_element == q('#q'), '/ focuses the search field')
    q('#q').send_keys('zebrafinch' + Keys.ENTER)
    wait(lambda: rows() == ['Needle in haystack'], 'one search hit, got %r' % rows())

    step('write, save and send a draft with an attachment')
    d.execute_script('document.activeElement.blur()')
    keys('c')
    wait(lambda: q('#composer').is_displayed(), 'composer')
    q('#c-to').send_keys('not-an-address')
    q('#c-send').click()
    wait(lambda: q('#c-status').text == 'Error: not an address: not-an-address', 'a bad address is refused, status %r' % q('#c-status').text)
    check(q('#composer').is_displayed(), 'the composer stays open')
    q('#c-to').clear()
    q('#c-to').send_keys('Friend <friend@example.net>')
    q('#c-subject').send_keys('Plans for Friday')
    q('#c-body').send_keys('See you at noon.')
    att = tempfile.NamedTemporaryFile(suffix='.txt', prefix='agenda-', delete=False)
    att.write(b'1. lunch\n2. walk\n')
    att.close()
    q('#c-files').send_keys(att.name)
    wait(lambda: os.path.basename(att.name) in q('#c-attachments').text, 'attachment uploaded')
    q('#c-save').click()
    wait(lambda: q('#c-status').text == 'Draft saved.', 'draft saved, status %r' % q('#c-status').text)
    q('#c-discard')  # still there
    keys(Keys.ESCAPE)
    wait(lambda: not q('#composer').is_displayed(), 'composer closed')
    open_folder('Drafts')
    wait(lambda: rows() == ['Plans for Friday'], 'draft in Drafts')
    click_row('Plans for Friday')
    wait(lambda: qs('button.edit-draft'), 'edit draft button')
    q('button.edit-draft').click()
    wait(lambda: q('#composer').is_displayed(), 'composer for the draft')
    check(q('#c-subject').get_attribute('value') == 'Plans for Friday', 'draft subject restored')
    check(os.path.basename(att.name) in q('#c-attachments').text, 'draft attachment restored')
    q('#c-send').click()
    wait(lambda: not q('#composer').is_displayed(), 'composer closes once sent, status %r' % q('#c-status').text)
    wait(lambda: rows() == [], 'Drafts emptied')
    open_folder('Sent')
    wait(lambda: rows() == ['Plans for Friday'], 'sent message in Sent')

    step('a new delivery appears without reloading')
    open_folder('Inbox')
    before = len(rows())
    deliver('Fresh off the wire', 'Delivered while you watched.\n')
    wait(lambda: 'Fresh off the wire' in rows(), 'new message appears', timeout=20)
    check(len(rows()) == before + 1, 'one more row')
    check(d.execute_script('return window.__noReload') == 42, 'page was not reloaded')

    step('sort and conversations')
    Select(q('#sort')).select_by_visible_text('Oldest first')
    wait(lambda: rows()[-1:] == ['Fresh off the wire'], 'oldest first, got %r' % rows())
    Select(q('#sort')).select_by_visible_text('Largest first')
    wait(lambda: rows()[:1] == ['Newsletter'], 'largest first, got %r' % rows())
    Select(q('#sort')).select_by_visible_text('Subject')
    by_subject = lambda: sorted(rows(), key=lambda t: t.lower().removeprefix('re: '))
    wait(lambda: rows()[:1] == ['Fresh off the wire'] and rows() == by_subject(), 'by subject, got %r' % rows())
    Select(q('#sort')).select_by_visible_text('Sender')
    wait(lambda: rows()[-1:] == ['Needle in haystack'], 'by sender (bob last), got %r' % rows())
    Select(q('#sort')).select_by_visible_text('Newest first')
    wait(lambda: rows()[:1] == ['Fresh off the wire'], 'newest first')
    check('Error' not in status(), 'no error: %r' % status())
    deliver('Re: Welcome aboard', 'Thanks!\n', sender='bob@example.com',
            headers=[('In-Reply-To', '<welcome@test>'), ('References', '<welcome@test>')])
    wait(lambda: 'Re: Welcome aboard' in rows(), 'the reply arrives')
    count = len(rows())
    q('#threads').click()
    wait(lambda: len(rows()) == count - 1, 'the reply folds into its conversation')
    wait(lambda: d.execute_script("return [...document.querySelectorAll('#list .tcount')].map(e => e.textContent.trim())") == ['2'], 'one conversation of two')
    click_row('Re: Welcome aboard')
    wait(lambda: len(qs('#message article.mail')) == 2, 'both messages of the conversation shown')
    check('Thanks!' in q('#message').text and 'the store is ready' in q('#message').get_attribute('innerHTML'), 'conversation bodies')
    q('#threads').click()
    wait(lambda: len(rows()) == count, 'conversations off')

    step('paging')
    deliver_many([message('Bulk %02d' % i, 'bulk %d\n' % i) for i in range(50)])
    total = count + 50
    wait(lambda: q('#range').text == '1\u201350 of %d' % total, 'range %r' % q('#range').text, timeout=20)
    check(len(rows()) == 50, 'a page of 50')
    first = set(rows())
    q('#next').click()
    wait(lambda: len(rows()) == total - 50 and q('#range').text == '51\u2013%d of %d' % (total, total), 'second page')
    check(not first & set(rows()), 'pages overlap: %r' % (first & set(rows())))
    q('#prev').click()
    wait(lambda: len(rows()) == 50, 'first page again')

    step('reply with the keyboard')
    keys('/')
    q('#q').send_keys('Welcome' + Keys.ENTER)
    wait(lambda: 'Welcome aboard' in rows(), 'search finds Welcome aboard, got %r' % rows())
    click_row('Welcome aboard')
    wait(lambda: q('#subject').text == 'Welcome aboard', 'Welcome aboard open')
    d.execute_script('document.activeElement.blur()')
    keys('r')
    wait(lambda: q('#composer').is_displayed(), 'composer for the reply')
    check(q('#c-to').get_attribute('value') == 'ann@example.com', 'reply to the sender: %r' % q('#c-to').get_attribute('value'))
    check(q('#c-subject').get_attribute('value') == 'Re: Welcome aboard', 'reply subject')
    check('> the store is ready.' in q('#c-body').get_attribute('value'), 'quoted original')
    check(d.switch_to.active_element == q('#c-body'), 'the cursor is in the text')
    q('#c-body').send_keys('Glad to hear it.')
    q('#c-send').click()
    wait(lambda: not q('#composer').is_displayed(), 'reply sent, status %r' % q('#c-status').text)

    step('phone-sized screen')
    open_folder('Inbox')
    d.set_window_size(390, 844)
    wait(lambda: q('#list').is_displayed() and not q('#folders').is_displayed(), 'list only')
    click_row(rows()[0])
    wait(lambda: q('#reader').is_displayed() and not q('#list').is_displayed(), 'message only')
    q('#back').click()
    wait(lambda: q('#list').is_displayed(), 'back to the list')
    q('#menu').click()
    wait(lambda: q('#folders').is_displayed(), 'folders on demand')
    d.set_window_size(1280, 900)

    step('log out')
    q('#logout').click()
    wait(lambda: q('#username').is_displayed(), 'login form again')
    errors = [l for l in d.get_log('browser') if l['level'] == 'SEVERE']
    check(not errors, 'browser errors: %r' % errors)
except Exception:
    for l in d.get_log('browser'):
        print('browser:', l, flush=True)
    raise
finally:
    d.quit()
print('DONE')
"#####;
