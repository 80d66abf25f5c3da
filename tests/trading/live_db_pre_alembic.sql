-- The live database as candleflow made it before migrations: Ledger.create_all() (LEDGER_METADATA
-- and EXECUTION_METADATA .create_all on SQLite), dumped from sqlite_master. No alembic_version table.
-- Frozen: never edit it to follow a schema change (that is what a migration is for).

CREATE TABLE signals (
	id INTEGER NOT NULL,
	symbol VARCHAR(32) NOT NULL,
	timeframe VARCHAR(8) NOT NULL,
	ts DATETIME NOT NULL,
	model_name VARCHAR(200) NOT NULL,
	model_version VARCHAR(64) NOT NULL,
	shadow BOOLEAN NOT NULL,
	status VARCHAR(16) NOT NULL,
	action INTEGER,
	probability FLOAT,
	weight FLOAT,
	tier VARCHAR(16),
	position_multiplier FLOAT,
	components JSON,
	explanation JSON,
	created_at DATETIME NOT NULL,
	updated_at DATETIME NOT NULL,
	PRIMARY KEY (id),
	CONSTRAINT uq_signals_key UNIQUE (symbol, timeframe, ts, model_version, shadow)
);

CREATE INDEX ix_signals_ts ON signals (ts);

CREATE TABLE orders (
	id INTEGER NOT NULL,
	order_id VARCHAR(64) NOT NULL,
	symbol VARCHAR(32) NOT NULL,
	timeframe VARCHAR(8) NOT NULL,
	ts DATETIME NOT NULL,
	model_version VARCHAR(64) NOT NULL,
	side INTEGER NOT NULL,
	quantity FLOAT NOT NULL,
	stop_loss FLOAT,
	take_profit FLOAT,
	timeout_at DATETIME,
	status VARCHAR(16) NOT NULL,
	broker VARCHAR(64) NOT NULL,
	broker_order_id VARCHAR(200),
	dry_run BOOLEAN NOT NULL,
	reason TEXT,
	created_at DATETIME NOT NULL,
	updated_at DATETIME NOT NULL,
	PRIMARY KEY (id),
	CONSTRAINT uq_orders_key UNIQUE (symbol, timeframe, ts, model_version),
	UNIQUE (order_id)
);

CREATE TABLE risk_events (
	id INTEGER NOT NULL,
	ts DATETIME NOT NULL,
	symbol VARCHAR(32),
	kind VARCHAR(64) NOT NULL,
	reason TEXT NOT NULL,
	details JSON,
	created_at DATETIME NOT NULL,
	PRIMARY KEY (id)
);

CREATE INDEX ix_risk_events_ts ON risk_events (ts);

CREATE TABLE paper_accounts (
	account VARCHAR(64) NOT NULL,
	currency VARCHAR(8) NOT NULL,
	initial_balance FLOAT NOT NULL,
	balance FLOAT NOT NULL,
	day DATE,
	day_start_equity FLOAT NOT NULL,
	peak_equity FLOAT NOT NULL,
	updated_at DATETIME NOT NULL,
	PRIMARY KEY (account)
);

CREATE TABLE paper_marks (
	account VARCHAR(64) NOT NULL,
	symbol VARCHAR(32) NOT NULL,
	ts DATETIME NOT NULL,
	close FLOAT NOT NULL,
	PRIMARY KEY (account, symbol)
);

CREATE TABLE positions (
	id INTEGER NOT NULL,
	account VARCHAR(64) NOT NULL,
	order_id VARCHAR(64) NOT NULL,
	symbol VARCHAR(32) NOT NULL,
	timeframe VARCHAR(8) NOT NULL,
	candle_ts DATETIME NOT NULL,
	side INTEGER NOT NULL,
	quantity FLOAT NOT NULL,
	stop_loss FLOAT,
	take_profit FLOAT,
	timeout_at DATETIME,
	status VARCHAR(16) NOT NULL,
	entry_ts DATETIME,
	entry_price FLOAT,
	exit_ts DATETIME,
	exit_price FLOAT,
	exit_reason VARCHAR(16),
	fees FLOAT NOT NULL,
	realized_pnl FLOAT,
	created_at DATETIME NOT NULL,
	PRIMARY KEY (id),
	UNIQUE (order_id)
);

CREATE INDEX ix_positions_account_status ON positions (account, status);

CREATE TABLE fills (
	id INTEGER NOT NULL,
	account VARCHAR(64) NOT NULL,
	order_id VARCHAR(64) NOT NULL,
	kind VARCHAR(8) NOT NULL,
	symbol VARCHAR(32) NOT NULL,
	ts DATETIME NOT NULL,
	side INTEGER NOT NULL,
	quantity FLOAT NOT NULL,
	price FLOAT NOT NULL,
	fee FLOAT NOT NULL,
	reason VARCHAR(16) NOT NULL,
	realized_pnl FLOAT,
	created_at DATETIME NOT NULL,
	PRIMARY KEY (id),
	CONSTRAINT uq_fills_order_kind UNIQUE (order_id, kind)
);
