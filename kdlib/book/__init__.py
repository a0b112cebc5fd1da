"""The book: profiles (`profiles/`), the papermill pipeline (`runner`), the notebooks' setup (`notebook`),
staging and building (`build`), and the `run` / `readme` commands (`commands`). Nothing below imports it.
"""
