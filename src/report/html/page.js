// Filters (status, category, slice, text) and sorting of the case list, and the image lightbox.
(function () {
  "use strict";
  var $ = function (id) { return document.getElementById(id); };
  var list = $("case-list");
  var cards = Array.prototype.slice.call(list.children);
  var fStatus = $("f-status"), fCat = $("f-cat"), fSlice = $("f-slice");
  var fText = $("f-text"), fSort = $("f-sort"), count = $("f-count");
  var texts = null;
  function apply() {
    var s = fStatus.value, c = fCat.value, sl = fSlice.value;
    var t = fText.value.trim().toLowerCase();
    if (t && !texts) texts = cards.map(function (e) { return e.textContent.toLowerCase(); });
    var shown = 0;
    cards.forEach(function (e, i) {
      var ok = (!s || e.dataset.status === s) && (!c || e.dataset.cat === c) &&
        (!sl || e.dataset.slices.indexOf("|" + sl + "|") >= 0) && (!t || texts[i].indexOf(t) >= 0);
      e.hidden = !ok;
      if (ok) shown++;
    });
    count.textContent = shown + " of " + cards.length + " cases";
    if (typeof sweep === "function") sweep();
  }
  function sort() {
    var k = fSort.value, order = cards.map(function (e, i) { return [e, i]; });
    if (k !== "name") {
      var dir = k === "score-asc" ? 1 : -1;
      order.sort(function (a, b) {
        return dir * (parseFloat(a[0].dataset.score) - parseFloat(b[0].dataset.score)) || a[1] - b[1];
      });
    }
    var frag = document.createDocumentFragment();
    order.forEach(function (p) { frag.appendChild(p[0]); });
    list.appendChild(frag);
    sweep();
  }
  [fStatus, fCat, fSlice].forEach(function (el) { el.addEventListener("change", apply); });
  fText.addEventListener("input", apply);
  fSort.addEventListener("change", sort);
  // A link to a case hidden by the filters clears them first.
  function reveal() {
    var id = decodeURIComponent(location.hash.slice(1)), el = id && $(id);
    if (el && el.hidden) {
      fStatus.value = fCat.value = fSlice.value = fText.value = "";
      apply();
      el.scrollIntoView();
    }
  }
  window.addEventListener("hashchange", reveal);
  // Images: an <img data-src="t-N"> gets its data URI from the hidden element t-N when it nears
  // the viewport, so only the rows on screen are decoded.
  function load(img) {
    var data = !img.getAttribute("src") && img.dataset.src && $(img.dataset.src);
    if (data) img.src = data.textContent.trim();
  }
  // Only images near the viewport are loaded: on start, on scroll (debounced) and after a
  // filter or sort change; an IntersectionObserver does the same where the browser has one.
  var pending = Array.prototype.slice.call(document.querySelectorAll("img[data-src]"));
  function sweep() {
    var lo = -800, hi = window.innerHeight + 800;
    pending = pending.filter(function (i) {
      if (i.getAttribute("src")) return false;
      if (i.offsetParent === null) return true;
      var r = i.getBoundingClientRect();
      if (r.bottom >= lo && r.top <= hi) { load(i); return false; }
      return true;
    });
  }
  var timer = null;
  window.addEventListener("scroll", function () {
    if (timer === null) timer = setTimeout(function () { timer = null; sweep(); }, 60);
  }, { passive: true });
  if ("IntersectionObserver" in window) {
    var io = new IntersectionObserver(function (entries) {
      entries.forEach(function (e) { if (e.isIntersecting) { load(e.target); io.unobserve(e.target); } });
    }, { rootMargin: "800px 0px" });
    pending.forEach(function (i) { io.observe(i); });
  }
  sweep();
  var box = $("lightbox"), holder = box.querySelector("div");
  function close() { box.hidden = true; holder.textContent = ""; }
  document.addEventListener("click", function (ev) {
    if (!box.hidden) { close(); return; }
    var el = ev.target.closest("img.thumb, .overlay");
    if (!el) return;
    var big;
    if (el.tagName === "IMG") {
      var full = el.dataset.full && $(el.dataset.full);
      big = new Image();
      big.alt = el.alt;
      big.src = full ? full.textContent.trim() : el.src;
    } else {
      big = el.cloneNode(true);
      Array.prototype.forEach.call(big.querySelectorAll("img"), load);
    }
    holder.appendChild(big);
    box.hidden = false;
  });
  document.addEventListener("keydown", function (ev) { if (ev.key === "Escape" && !box.hidden) close(); });
  apply();
  reveal();
})();
