"""llmcourse: the shared package of the book *How large language models work*.

One module per idea (tokens, vectors, attention, ...); `data` loads every corpus and asset offline;
`checks` holds the graded checks; `grading` (a subpackage, one module per verb) and `cli` are the
instructor tools.
"""
__version__ = "0.1.0"
