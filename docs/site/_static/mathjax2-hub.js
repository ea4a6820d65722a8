// The ipywidgets HTML manager (jupyter-widgets/embed.js) typesets widget labels with MathJax 2's
// MathJax.Hub.Queue(["Typeset", MathJax.Hub, element]); the site serves MathJax 3, which has no Hub. This script
// loads before the manager, so its "load" handler runs before the manager's (both act on window load): it gives
// MathJax 3 a Hub whose Queue typesets the element with MathJax.typesetPromise once MathJax has started.
window.addEventListener("load", function () {
  var mathjax = window.MathJax;
  if (!mathjax || mathjax.Hub || !mathjax.startup) {
    return; // no MathJax on this page (the manager then typesets nothing), or a MathJax 2
  }
  mathjax.Hub = {
    Queue: function () {
      Array.prototype.forEach.call(arguments, function (job) {
        var element = Array.isArray(job) ? job[2] : undefined;
        var started = mathjax.startup.promise || Promise.resolve();
        mathjax.startup.promise = started.then(function () {
          return mathjax.typesetPromise(element ? [element] : undefined);
        });
      });
    },
  };
});
