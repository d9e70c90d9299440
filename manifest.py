# The project's frozen code: the smartbms package, the frozen main.py, microdot
# (vendored from its pinned PyPI release into build/vendor by `make vendor`) and the web UI.
package("smartbms", base_path="modules")
module("main.py", base_path="modules")
# Only the core of microdot: the web layer uses nothing else (no sessions, templates, ...).
package("microdot", files=("__init__.py", "microdot.py"), base_path="build/vendor")
# The web UI, gzipped into bytes literals by scripts/build_assets.py (`make vendor`).
module("webassets.py", base_path="build/gen")
