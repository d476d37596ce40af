"""heps-user-init: make the SSO identity a Linux user inside a user's notebook pod."""

__version__ = "0.1.0"
