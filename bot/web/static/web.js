// SERTAKAN web workbench: select-all boxes and the queue's keyboard shortcuts.
// j/k move between rows, x ticks the focused row, a accepts the ticked rows,
// r goes to the return reason, / goes to the search box.
(function () {
  "use strict";
  function typing(target) {
    return target && /^(INPUT|SELECT|TEXTAREA)$/.test(target.tagName) && target.type !== "checkbox";
  }
  document.addEventListener("change", function (event) {
    var box = event.target;
    if (box && box.id === "select-all") {
      var table = box.closest("table");
      table.querySelectorAll("tbody input[type=checkbox]").forEach(function (other) {
        other.checked = box.checked;
      });
    }
  });
  document.addEventListener("keydown", function (event) {
    if (event.ctrlKey || event.metaKey || event.altKey || typing(event.target)) return;
    var form = document.querySelector("form[data-shortcuts=queue]");
    if (!form) return;
    var rows = Array.prototype.slice.call(form.querySelectorAll("tbody tr"));
    var current = rows.indexOf(document.activeElement && document.activeElement.closest("tr"));
    if (event.key === "j" || event.key === "k") {
      var next = event.key === "j" ? Math.min(rows.length - 1, current + 1) : Math.max(0, current - 1);
      if (rows[next]) rows[next].focus();
    } else if (event.key === "x" && current >= 0) {
      var box = rows[current].querySelector("input[type=checkbox]");
      if (box) box.checked = !box.checked;
    } else if (event.key === "a") {
      var accept = document.getElementById("accept");
      if (accept) accept.click();
    } else if (event.key === "r") {
      var reason = document.getElementById("reason");
      if (reason) reason.focus();
    } else if (event.key === "/") {
      var search = document.getElementById("search");
      if (search) search.focus();
    } else {
      return;
    }
    event.preventDefault();
  });
})();
