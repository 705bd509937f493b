// The example tables: free-text search and a category filter (no network, no libraries).
(function () {
  "use strict";
  document.querySelectorAll("table.examples").forEach(function (table) {
    var filters = table.previousElementSibling;
    var search = filters.querySelector("input.search");
    var tag = filters.querySelector("select.tag");
    var shown = filters.querySelector(".shown");
    var rows = Array.prototype.slice.call(table.tBodies[0].rows);
    function apply() {
      var needle = search.value.toLowerCase();
      var wanted = tag ? tag.value : "";
      var count = 0;
      rows.forEach(function (row) {
        var tags = row.dataset.tags ? row.dataset.tags.split("|") : [];
        var hit = (!needle || row.textContent.toLowerCase().indexOf(needle) >= 0) &&
          (!wanted || tags.indexOf(wanted) >= 0);
        row.hidden = !hit;
        if (hit) { count += 1; }
      });
      shown.textContent = count + " of " + rows.length + " items";
    }
    search.addEventListener("input", apply);
    if (tag) { tag.addEventListener("change", apply); }
    apply();
  });
}());
