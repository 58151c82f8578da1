from railyard.cli import app

app(prog_name="railyard")
