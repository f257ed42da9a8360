/* Bantin web console: progressive enhancement only. Every page works without it.
 *
 * - The editor: a Markdown toolbar (shown while the Markdown format is chosen), and a paste
 *   handler that keeps a word processor's paragraphs and drops its styling.
 * - A bulletin's page: its status, polled until the bulletin is settled (online, scheduled,
 *   withdrawn or failed).
 * - Every form: a second press while its post is on its way is dropped.
 *
 * No innerHTML anywhere (the console's CSP requires Trusted Types): text goes in through
 * textContent and the textarea's own editing. Pasted HTML is parsed into an inert document
 * (DOMParser: no script runs, nothing loads) through the one policy the CSP allows.
 */
(function () {
  "use strict";

  // ---- paste: paragraphs kept, styling dropped ----------------------------------------

  var policy = null;
  function parsePolicy() {
    if (policy === null && window.trustedTypes && window.trustedTypes.createPolicy) {
      try {
        policy = window.trustedTypes.createPolicy("bantin-paste", {
          createHTML: function (html) {
            return html;
          },
        });
      } catch (error) {
        policy = false; // made already (a second init) or refused: parse nothing
      }
    }
    return policy;
  }

  var BLOCKS = {
    ADDRESS: 1, ARTICLE: 1, ASIDE: 1, BLOCKQUOTE: 1, CAPTION: 1, DD: 1, DIV: 1, DL: 1, DT: 1,
    FIELDSET: 1, FIGCAPTION: 1, FIGURE: 1, FOOTER: 1, FORM: 1, H1: 1, H2: 1, H3: 1, H4: 1,
    H5: 1, H6: 1, HEADER: 1, HR: 1, LI: 1, MAIN: 1, NAV: 1, OL: 1, P: 1, PRE: 1, SECTION: 1,
    TABLE: 1, TBODY: 1, TD: 1, TFOOT: 1, TH: 1, THEAD: 1, TR: 1, UL: 1,
  };
  var SKIPPED = { HEAD: 1, META: 1, LINK: 1, SCRIPT: 1, STYLE: 1, TEMPLATE: 1, TITLE: 1, NOSCRIPT: 1 };

  // Styling goes before parsing: the parsed document shares the page's CSP, which would
  // report every <style> and style="" of a word processor's markup (never applied anyway).
  function withoutStyling(html) {
    return html
      .replace(/<!--[\s\S]*?-->/g, "")
      .replace(/<(style|script|template)\b[\s\S]*?<\/\1\s*>/gi, "")
      .replace(/<(link|meta)\b[^>]*>/gi, "")
      .replace(/\sstyle\s*=\s*("[^"]*"|'[^']*'|[^\s>]*)/gi, "");
  }

  // The text of pasted HTML as blocks: [{text, item}], one per paragraph-like element.
  function htmlBlocks(html) {
    html = withoutStyling(html);
    var made = parsePolicy();
    var source = made ? made.createHTML(html) : window.trustedTypes ? null : html;
    if (source === null) {
      return null;
    }
    var doc = new DOMParser().parseFromString(source, "text/html");
    var blocks = [];
    var current = "";
    var item = false;

    function flush() {
      var text = current
        .replace(/[ \t\u00a0]+/g, " ")
        .replace(/ *\n */g, "\n")
        .replace(/^\n+|\n+$/g, "")
        .trim();
      if (text) {
        blocks.push({ text: text, item: item });
      }
      current = "";
      item = false;
    }

    function walk(node) {
      for (var child = node.firstChild; child; child = child.nextSibling) {
        if (child.nodeType === 3) {
          current += child.nodeValue.replace(/\s+/g, " ");
        } else if (child.nodeType === 1) {
          var tag = child.tagName.toUpperCase();
          if (SKIPPED[tag]) {
            continue;
          }
          if (tag === "BR") {
            current += "\n";
          } else if (BLOCKS[tag]) {
            flush();
            walk(child);
            item = item || tag === "LI";
            flush();
          } else {
            walk(child);
          }
        }
      }
    }

    walk(doc.body || doc.documentElement);
    flush();
    return blocks;
  }

  // Blocks as the body's source: paragraphs separated by a blank line; list items as "- "
  // lines of one paragraph (a list in Markdown, lines of one paragraph in plain text).
  function blocksToText(blocks) {
    var out = "";
    for (var i = 0; i < blocks.length; i++) {
      var text = blocks[i].item ? "- " + blocks[i].text : blocks[i].text;
      if (i > 0) {
        out += blocks[i].item && blocks[i - 1].item ? "\n" : "\n\n";
      }
      out += text;
    }
    return out;
  }

  // Plain text: each line break of a word processor ends a paragraph.
  function plainToText(plain) {
    var lines = plain.replace(/\r\n?/g, "\n").split("\n");
    var kept = [];
    for (var i = 0; i < lines.length; i++) {
      var line = lines[i].replace(/[ \t\u00a0]+$/g, "");
      if (line.trim()) {
        kept.push(line);
      }
    }
    return kept.join("\n\n");
  }

  function insertText(area, text) {
    area.focus();
    // execCommand keeps the browser's undo history; setRangeText where it is gone.
    var done = false;
    try {
      done = document.execCommand("insertText", false, text);
    } catch (error) {
      done = false;
    }
    if (!done) {
      area.setRangeText(text, area.selectionStart, area.selectionEnd, "end");
      area.dispatchEvent(new Event("input", { bubbles: true }));
    }
  }

  function formatOf(form) {
    var checked = form.querySelector("[data-format-choice]:checked");
    return checked ? checked.value : "text";
  }

  function onPaste(event) {
    var data = event.clipboardData;
    if (!data) {
      return;
    }
    var area = event.currentTarget;
    var html = data.getData("text/html");
    var plain = data.getData("text/plain");
    var text = null;
    if (html) {
      var blocks = htmlBlocks(html);
      text = blocks === null ? null : blocksToText(blocks);
    } else if (plain && formatOf(area.form) !== "markdown" && /\n/.test(plain)) {
      text = plainToText(plain);
    }
    if (text === null) {
      return; // leave the paste to the browser (plain text, as pasted)
    }
    event.preventDefault();
    insertText(area, text);
  }

  // ---- Markdown toolbar ----------------------------------------------------------------

  function wrapSelection(area, before, after, placeholder) {
    var start = area.selectionStart;
    var end = area.selectionEnd;
    var chosen = area.value.slice(start, end) || placeholder;
    area.focus();
    area.setSelectionRange(start, end);
    insertText(area, before + chosen + after);
    area.setSelectionRange(start + before.length, start + before.length + chosen.length);
  }

  function prefixLines(area, prefix) {
    var value = area.value;
    var start = value.lastIndexOf("\n", area.selectionStart - 1) + 1;
    var end = area.selectionEnd;
    var lineEnd = value.indexOf("\n", end);
    if (lineEnd === -1) {
      lineEnd = value.length;
    }
    var lines = value.slice(start, lineEnd).split("\n");
    for (var i = 0; i < lines.length; i++) {
      if (lines[i].indexOf(prefix) !== 0) {
        lines[i] = prefix + lines[i];
      }
    }
    area.focus();
    area.setSelectionRange(start, lineEnd);
    insertText(area, lines.join("\n"));
  }

  function toolbarAction(area, what) {
    if (what === "bold") {
      wrapSelection(area, "**", "**", "chữ đậm");
    } else if (what === "italic") {
      wrapSelection(area, "*", "*", "chữ nghiêng");
    } else if (what === "heading") {
      prefixLines(area, "## ");
    } else if (what === "list") {
      prefixLines(area, "- ");
    } else if (what === "link") {
      var start = area.selectionStart;
      var chosen = area.value.slice(start, area.selectionEnd) || "chữ của liên kết";
      var url = "https://";
      area.focus();
      insertText(area, "[" + chosen + "](" + url + ")");
      // Leave the address selected, ready to be typed over.
      var at = start + chosen.length + 3;
      area.setSelectionRange(at, at + url.length);
    }
  }

  function initEditor() {
    var area = document.querySelector("textarea[data-body]");
    if (!area || !area.form) {
      return;
    }
    area.addEventListener("paste", onPaste);
    var toolbar = area.form.querySelector("[data-md-toolbar]");
    if (!toolbar) {
      return;
    }
    function sync() {
      toolbar.hidden = formatOf(area.form) !== "markdown";
    }
    var choices = area.form.querySelectorAll("[data-format-choice]");
    for (var i = 0; i < choices.length; i++) {
      choices[i].addEventListener("change", sync);
    }
    var buttons = toolbar.querySelectorAll("button[data-md]");
    for (var j = 0; j < buttons.length; j++) {
      buttons[j].addEventListener("click", function (event) {
        toolbarAction(area, event.currentTarget.getAttribute("data-md"));
      });
    }
    sync();
  }

  // ---- a bulletin's status, live -------------------------------------------------------

  // A publish takes tens of milliseconds: ask often at first, so the clerk sees "Đã đăng"
  // as soon as it is true, then less and less often (a scheduled or stuck bulletin).
  function pollDelay(elapsed) {
    if (elapsed < 10000) {
      return 100;
    }
    return elapsed < 120000 ? 500 : 2000;
  }
  var GIVE_UP_MS = 15 * 60 * 1000; // a page left open: stop asking after a while

  function initStatus() {
    var status = document.querySelector("[data-status-url]");
    if (!status || status.getAttribute("data-settled") === "true") {
      return;
    }
    var url = status.getAttribute("data-status-url");
    var linkBox = document.getElementById("trang-cong-khai");
    var link = linkBox ? linkBox.querySelector("[data-public-link]") : null;
    var started = Date.now();
    var delay = pollDelay(0);

    function show(state) {
      if (state.label && status.textContent !== state.label) {
        status.textContent = state.label; // role="status": read out politely
      }
      status.className = "status status--" + state.status;
      if (linkBox && link) {
        if (state.url) {
          link.setAttribute("href", state.url);
        }
        linkBox.hidden = !state.online;
      }
    }

    function poll() {
      fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } })
        .then(function (response) {
          if (!response.ok) {
            throw new Error("status " + response.status);
          }
          return response.json();
        })
        .then(function (state) {
          delay = pollDelay(Date.now() - started);
          show(state);
          if (!state.settled && Date.now() - started < GIVE_UP_MS) {
            window.setTimeout(poll, delay);
          } else {
            status.setAttribute("data-settled", "true");
          }
        })
        .catch(function () {
          // Signed out or the network went away: back off, still bounded.
          delay = Math.min(delay * 2, 10000);
          if (Date.now() - started < GIVE_UP_MS) {
            window.setTimeout(poll, delay);
          }
        });
    }

    window.setTimeout(poll, delay);
  }

  // After a post that re-shows the editor (errors, a conflict, a preview), the keyboard and
  // screen reader start where the news is, not at the top of the page.
  function initFocus() {
    var target = document.querySelector("[data-focus-on-load]");
    if (target) {
      target.focus();
    }
  }

  // ---- one submission at a time ---------------------------------------------------------

  // A second press while the first post is on its way is dropped (the idempotency key would
  // answer it anyway, but the clerk would wait twice). The buttons are never disabled: the
  // pressed one's name and value (action=publish, …) must go with the post. Released when the
  // page comes back from the history cache, and after a while in case the network hung.
  var RELEASE_MS = 15000;

  function initSubmitOnce() {
    var forms = document.querySelectorAll("form[method=post]");
    for (var i = 0; i < forms.length; i++) {
      forms[i].addEventListener("submit", function (event) {
        var form = event.currentTarget;
        if (form.getAttribute("data-submitting") === "true") {
          event.preventDefault();
          return;
        }
        form.setAttribute("data-submitting", "true");
        form.setAttribute("aria-busy", "true");
        window.setTimeout(function () {
          release(form);
        }, RELEASE_MS);
      });
    }
    window.addEventListener("pageshow", function () {
      for (var j = 0; j < forms.length; j++) {
        release(forms[j]);
      }
    });
  }

  function release(form) {
    form.removeAttribute("data-submitting");
    form.removeAttribute("aria-busy");
  }

  function init() {
    initSubmitOnce();
    initEditor();
    initStatus();
    initFocus();
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", init);
  } else {
    init();
  }
})();
