/* Bantin: reader text size on article pages.
 *
 * The toolbar ships with the `hidden` attribute and is revealed here, so a reader without
 * JavaScript never meets buttons that do nothing. The size is a percentage kept in
 * localStorage, so it follows the reader from one bulletin to the next.
 */
(function () {
  "use strict";

  var KEY = "bantin.textSize";
  var MIN = 80;
  var MAX = 160;
  var STEP = 10;
  var DEFAULT = 100;

  function clamp(value) {
    if (!isFinite(value)) {
      return DEFAULT;
    }
    // Snap to the step grid: a stored value from an older step size must not drift.
    var snapped = Math.round(value / STEP) * STEP;
    return Math.min(MAX, Math.max(MIN, snapped));
  }

  // Storage can throw (disabled cookies, some private modes): the buttons still work then,
  // the choice just is not remembered.
  function load() {
    try {
      var raw = window.localStorage.getItem(KEY);
      return raw === null ? DEFAULT : clamp(parseInt(raw, 10));
    } catch (error) {
      return DEFAULT;
    }
  }

  function save(size) {
    try {
      window.localStorage.setItem(KEY, String(size));
    } catch (error) {
      /* not remembered, see load() */
    }
  }

  function init() {
    var toolbar = document.querySelector("[data-text-size]");
    if (!toolbar) {
      return;
    }
    var buttons = toolbar.querySelectorAll("button[data-step]");
    var status = toolbar.querySelector("[data-text-size-status]");
    var target = document.getElementById(buttons[0].getAttribute("aria-controls"));
    if (!target) {
      return;
    }
    var size = load();

    function atLimit(button) {
      var step = parseInt(button.getAttribute("data-step"), 10);
      return step > 0 ? size >= MAX : size <= MIN;
    }

    // aria-disabled, not disabled: a disabled button drops the keyboard focus into <body>
    // the moment it reaches the limit, and a screen reader would lose its place.
    function apply(next) {
      size = clamp(next);
      target.style.setProperty("--text-scale", String(size / 100));
      for (var i = 0; i < buttons.length; i++) {
        buttons[i].setAttribute("aria-disabled", atLimit(buttons[i]) ? "true" : "false");
      }
      // role="status" is a polite live region: screen readers say each new size. Filled
      // before the toolbar is shown, the first value is not announced, only described.
      if (status) {
        status.textContent = "Cỡ chữ " + size + "%";
      }
    }

    for (var i = 0; i < buttons.length; i++) {
      buttons[i].addEventListener("click", function (event) {
        var button = event.currentTarget;
        if (atLimit(button)) {
          return;
        }
        var step = parseInt(button.getAttribute("data-step"), 10);
        apply(size + step * STEP);
        save(size);
      });
    }
    // Another tab changed the size: follow it, so two open bulletins never disagree.
    window.addEventListener("storage", function (event) {
      if (event.key === KEY) {
        apply(load());
      }
    });

    apply(size);
    toolbar.hidden = false;
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", init);
  } else {
    init();
  }
})();
