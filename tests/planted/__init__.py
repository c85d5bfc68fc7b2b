"""Planted wrong implementations, one per graded function of each exercise.

Each entry replaces one solution cell of the solution notebook (by its nbgrader grade_id) with a typical
student mistake. The round-trip test grades every planted notebook with `llmcourse grade` and checks that
the cells in `fails` lose their points with `message` in the feedback, while the cells in `keeps` keep theirs.
"""
