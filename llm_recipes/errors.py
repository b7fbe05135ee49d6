"""The one exception family a user should ever see from a recipe: a mistake they can fix, said in one line."""


class UserError(ValueError):
    """A problem with the user's config, data or paths. Recipes print it as one line and exit with code 2."""
