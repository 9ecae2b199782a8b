// Load MathJax: the local copy first (written by `make docs`), the CDN if it is missing.
(function () {
  var here = document.currentScript.src.replace(/[^/]*$/, "");
  function load(src, onerror) {
    var s = document.createElement("script");
    s.src = src;
    s.async = true;
    s.id = "MathJax-script";
    if (onerror) s.onerror = onerror;
    document.head.appendChild(s);
  }
  load(here + "vendor/mathjax/tex-chtml.js", function () {
    load("https://unpkg.com/mathjax@3.2.2/es5/tex-chtml.js");
  });
})();
