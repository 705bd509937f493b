// tunelab rate: keyboard shortcuts and the progress bar (no inline script: the page's CSP
// allows scripts from this file only).
(function () {
  "use strict";
  var bar = document.getElementById("bar");
  if (bar) { bar.style.width = bar.dataset.percent + "%"; }
  var form = document.getElementById("rating");
  if (!form) { return; }
  var scale = parseInt(form.dataset.scale, 10);
  var rows = Array.prototype.slice.call(form.querySelectorAll("fieldset.score"));
  var current = 0;
  function checked(row) { return row.querySelector("input:checked") !== null; }
  function focusRow(i) {
    if (!rows.length) { return; }
    current = Math.max(0, Math.min(rows.length - 1, i));
    rows.forEach(function (row, j) { row.classList.toggle("current", j === current); });
  }
  function firstOpen() {
    for (var i = 0; i < rows.length; i++) { if (!checked(rows[i])) { return i; } }
    return rows.length - 1;
  }
  rows.forEach(function (row, i) {
    row.addEventListener("click", function () { focusRow(i); });
  });
  focusRow(firstOpen());
  function press(action) {
    var button = document.getElementById(action);
    if (button) { button.click(); }
  }
  function prefer(value) {
    var input = form.querySelector('input[name="preference"][value="' + value + '"]');
    if (input) { input.checked = true; }
  }
  document.addEventListener("keydown", function (event) {
    var target = event.target;
    var typing = target && (target.tagName === "TEXTAREA" || target.tagName === "INPUT" && target.type === "text");
    if (typing) {
      if (event.key === "Escape") { target.blur(); }
      return;
    }
    if (event.ctrlKey || event.metaKey || event.altKey) { return; }
    var key = event.key;
    var digit = parseInt(key, 10);
    if (!isNaN(digit) && digit >= 1 && digit <= scale && rows.length) {
      var input = rows[current].querySelector('input[value="' + digit + '"]');
      input.checked = true;
      focusRow(current + 1 < rows.length ? current + 1 : current);
    } else if (key === "ArrowDown" || key === "j") { focusRow(current + 1); }
    else if (key === "ArrowUp" || key === "k") { focusRow(current - 1); }
    else if (key === "a") { prefer("A"); }
    else if (key === "b") { prefer("B"); }
    else if (key === "t") { prefer("tie"); }
    else if (key === "n") { document.getElementById("note").focus(); }
    else if (key === "Enter") { press("submit"); }
    else if (key === "s") { press("skip"); }
    else if (key === "f") { press("flag"); }
    else if (key === "p") { var prev = document.getElementById("previous"); if (prev) { prev.click(); } }
    else { return; }
    event.preventDefault();
  });
}());
