"""Statistics and verdicts over a run's predictions: intervals (`stats`), verdicts (`claims`), loss curves
(`curves`), length bins (`lengths`), tables and figures (`reporting`).
"""
