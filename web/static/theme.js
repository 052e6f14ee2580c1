// Light or dark: follows the device (prefers-color-scheme) until the person picks one with the
// Theme button; the pick is kept in this browser only (localStorage), never sent to the post.
(function () {
  "use strict";
  var KEY = "waypost-theme";
  var root = document.documentElement;
  function stored() {
    try { return window.localStorage.getItem(KEY); } catch (e) { return null; }
  }
  function effective() {
    var pick = root.dataset.theme;
    if (pick === "dark" || pick === "light") { return pick; }
    return window.matchMedia && window.matchMedia("(prefers-color-scheme: dark)").matches ? "dark" : "light";
  }
  var pick = stored();
  if (pick === "dark" || pick === "light") { root.dataset.theme = pick; }

  function label(button) {
    var next = effective() === "dark" ? "light" : "dark";
    button.textContent = next === "dark" ? "Dark theme" : "Light theme";
    button.setAttribute("aria-label", "Switch to the " + next + " theme");
  }
  document.addEventListener("DOMContentLoaded", function () {
    var button = document.getElementById("theme-toggle");
    if (!button) { return; }
    button.hidden = false;
    label(button);
    button.addEventListener("click", function () {
      var next = effective() === "dark" ? "light" : "dark";
      root.dataset.theme = next;
      try { window.localStorage.setItem(KEY, next); } catch (e) { /* private mode: this page only */ }
      label(button);
    });
  });
}());
