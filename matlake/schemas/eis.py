TABLES = []
VIEWS = {}
