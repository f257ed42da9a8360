BEGIN TRANSACTION;
CREATE TABLE agencies (
	id INTEGER NOT NULL, 
	slug VARCHAR(64) NOT NULL, 
	name VARCHAR(200) NOT NULL, 
	created_at DATETIME NOT NULL, 
	PRIMARY KEY (id), 
	UNIQUE (slug)
);
INSERT INTO "agencies" VALUES(1,'bac-kan','Sở Y tế Bắc Kạn','2026-11-30 08:06:19.850555');
INSERT INTO "agencies" VALUES(2,'ha-noi','UBND TP Hà Nội','2026-11-30 08:06:22.312743');
CREATE TABLE api_keys (
	id INTEGER NOT NULL, 
	agency_id INTEGER NOT NULL, 
	key_hash VARCHAR(64) NOT NULL, 
	prefix VARCHAR(16), 
	created_at DATETIME NOT NULL, 
	revoked_at DATETIME, 
	PRIMARY KEY (id), 
	FOREIGN KEY(agency_id) REFERENCES agencies (id), 
	UNIQUE (key_hash)
);
INSERT INTO "api_keys" VALUES(1,1,'3b765d4312a26875aa3917e485f68bc891cd3ea00b9acb8b726fdba18611e3d0','bt_live_uhY7OBFQ','2026-11-30 08:06:19.872031',NULL);
INSERT INTO "api_keys" VALUES(2,2,'59338b78958eca6392fb5c7de767cb9902d9188d7d690133fe2d90e33a58ccd5','bt_live_vx44dlbG','2026-11-30 08:06:22.313809',NULL);
INSERT INTO "api_keys" VALUES(3,1,'8cd0a4ce335f8e0a7ccc67613b04bea8e50ce19bb01d854d453ab7210d890592','bt_live_3XSuBLHA','2026-11-30 08:06:24.064265','2026-11-30 08:06:25.735426');
CREATE TABLE bulletins (
	id INTEGER NOT NULL, 
	guid VARCHAR(45) NOT NULL, 
	agency_id INTEGER NOT NULL, 
	slug VARCHAR(120) NOT NULL, 
	title TEXT NOT NULL, 
	summary TEXT, 
	body_format VARCHAR(16) NOT NULL, 
	body_source TEXT NOT NULL, 
	body_html TEXT NOT NULL, 
	author VARCHAR(200), 
	category VARCHAR(200), 
	category_slug VARCHAR(120), 
	language VARCHAR(16) NOT NULL, 
	published_at DATETIME NOT NULL, 
	status VARCHAR(16) NOT NULL, 
	revision INTEGER NOT NULL, 
	rendered_revision INTEGER NOT NULL, 
	attempts INTEGER NOT NULL, 
	last_error TEXT, 
	pending_since DATETIME, 
	content_hash VARCHAR(64), 
	idempotency_key VARCHAR(200), 
	request_hash VARCHAR(64), 
	created_at DATETIME NOT NULL, 
	updated_at DATETIME NOT NULL, 
	rendered_at DATETIME, 
	PRIMARY KEY (id), 
	CONSTRAINT uq_bulletin_idempotency UNIQUE (agency_id, idempotency_key), 
	UNIQUE (guid), 
	FOREIGN KEY(agency_id) REFERENCES agencies (id)
);
INSERT INTO "bulletins" VALUES(1,'urn:uuid:c78e33b0-0eea-417d-afea-8907eb53d1ca',1,'thong-bao-tam-dung-cap-nuoc-sinh-hoat-tai-phuong-duc-xuan','Thông báo tạm dừng cấp nước sinh hoạt tại phường Đức Xuân (đính chính)','Tạm dừng cấp nước để sửa chữa đường ống.','text','Công ty Cổ phần Cấp thoát nước Bắc Kạn thông báo tạm dừng cấp nước.

Thời gian: từ 8 giờ đến 17 giờ ngày 02/8/2020.','<p>Công ty Cổ phần Cấp thoát nước Bắc Kạn thông báo tạm dừng cấp nước.</p>
<p>Thời gian: từ 8 giờ đến 17 giờ ngày 02/8/2020.</p>','Phòng Hành chính','Hạ tầng','ha-tang','vi','2020-07-31 01:00:00.000000','published',2,1,0,NULL,'2026-11-30 08:06:29.815770','7e7e9912c868b0567bae6cf609830a4a319ecd47ca7f5569f6e8b5e82ac64f8f','phat-hanh-0','2f602dc28c41f4fb81ad96f4d60eaf7fc667f540e047b2f7452ba3040af759f4','2026-11-30 08:06:29.606251','2026-11-30 08:06:29.815770','2026-11-30 08:06:29.606251');
INSERT INTO "bulletins" VALUES(2,'urn:uuid:df642220-7ef7-4e4f-b6f6-fa5bffe27c04',1,'quyet-dinh-ve-viec-phong-chong-dich-benh','Quyết định về việc phòng, chống dịch bệnh',NULL,'markdown','# Quyết định

**Điều 1.** Áp dụng các biện pháp *cấp bách* phòng dịch.','<h2>Quyết định</h2>
<p><strong>Điều 1.</strong> Áp dụng các biện pháp <em>cấp bách</em> phòng dịch.</p>
',NULL,'Y tế','y-te','vi','2020-08-01 03:30:00.000000','published',1,1,0,NULL,NULL,'f4bb1b17b8baecc2ce9accba0b8edc00c6550e30cd507cdda6b6d8cce92ee673',NULL,'f4bb1b17b8baecc2ce9accba0b8edc00c6550e30cd507cdda6b6d8cce92ee673','2026-11-30 08:06:29.606251','2026-11-30 08:06:29.606251','2026-11-30 08:06:29.606251');
INSERT INTO "bulletins" VALUES(3,'urn:uuid:29592210-84c7-4a46-bd1f-897be56479b1',2,'canh-bao-khan-cap-mua-lu-tren-song-cau','Cảnh báo khẩn cấp: mưa lũ trên sông Cầu',NULL,'html','<p>Người dân <strong>không</strong> đi qua ngầm tràn.</p><script>x()</script>','<p>Người dân <strong>không</strong> đi qua ngầm tràn.</p>',NULL,'Khẩn cấp','khan-cap','vi','2026-11-30 08:06:29.606251','withdrawn',2,1,0,NULL,'2026-11-30 08:06:29.818491','1fef659dcde9a7b5d4de092ea1c467615f3c65c72ed05e0f1426339bea1ec2f6','phat-hanh-2','1fef659dcde9a7b5d4de092ea1c467615f3c65c72ed05e0f1426339bea1ec2f6','2026-11-30 08:06:29.606251','2026-11-30 08:06:29.818491','2026-11-30 08:06:29.606251');
INSERT INTO "bulletins" VALUES(4,'urn:uuid:1b8160f9-581c-497b-9d77-105e612c93ee',2,'lich-tiep-cong-dan-thang-9','Lịch tiếp công dân tháng 9',NULL,'text','Lãnh đạo tiếp công dân vào thứ Năm.','<p>Lãnh đạo tiếp công dân vào thứ Năm.</p>',NULL,'Y tế','y-te','vi','2026-12-30 08:06:29.606251','scheduled',1,0,0,NULL,'2026-11-30 08:06:29.756466','c86f4f55f1d274580a28efa245f67e372e63b2ef327c1cf912d65197ef34a791',NULL,'c86f4f55f1d274580a28efa245f67e372e63b2ef327c1cf912d65197ef34a791','2026-11-30 08:06:29.606251','2026-11-30 08:06:29.606251',NULL);
INSERT INTO "bulletins" VALUES(5,'urn:uuid:ec3ba795-915f-45d8-9947-3e2cdb41946e',1,'thong-bao-tuyen-dung-vien-chuc-nam-2020','Thông báo tuyển dụng viên chức năm 2020',NULL,'text','Chi tiết tại trụ sở.','<p>Chi tiết tại trụ sở.</p>',NULL,NULL,NULL,'vi','2026-11-30 08:06:29.606251','failed',1,0,5,'OSError: [Errno 28] Hết dung lượng đĩa',NULL,'edc516fd7430805d159e483d072d36ad37865f66c5993f50b886f63112b431df','phat-hanh-4','edc516fd7430805d159e483d072d36ad37865f66c5993f50b886f63112b431df','2026-11-30 08:06:29.606251','2026-11-30 08:06:29.606251',NULL);
CREATE TABLE categories (
	id INTEGER NOT NULL, 
	slug VARCHAR(120) NOT NULL, 
	name VARCHAR(200) NOT NULL, 
	PRIMARY KEY (id), 
	UNIQUE (slug)
);
INSERT INTO "categories" VALUES(1,'ha-tang','Hạ tầng');
INSERT INTO "categories" VALUES(2,'y-te','Y tế');
INSERT INTO "categories" VALUES(3,'khan-cap','Khẩn cấp');
CREATE INDEX ix_bulletin_listing_all ON bulletins (status, published_at, id);
CREATE INDEX ix_bulletin_listing_category ON bulletins (category_slug, status, published_at, id);
CREATE INDEX ix_bulletin_listing_agency ON bulletins (agency_id, status, published_at, id);
CREATE INDEX ix_bulletin_pending_since ON bulletins (pending_since);
COMMIT;
