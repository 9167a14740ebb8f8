/* Starts Swagger UI (/docs) or ReDoc (/redoc) on the page web/api_docs.py renders: the pages' policy allows
 * no inline script, so the settings FastAPI would put inline come from the page's data attributes. */
"use strict";

(function () {
  const page = document.body.dataset;
  const target = document.getElementById("api-docs");
  if (page.viewer === "swagger") {
    window.ui = window.SwaggerUIBundle({
      url: page.openapiUrl,
      domNode: target,
      layout: "BaseLayout",
      deepLinking: true,
      showExtensions: true,
      showCommonExtensions: true,
      presets: [window.SwaggerUIBundle.presets.apis, window.SwaggerUIBundle.SwaggerUIStandalonePreset],
    });
  } else if (page.viewer === "redoc") {
    window.Redoc.init(page.openapiUrl, {}, target);
  }
})();
