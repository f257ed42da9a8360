--
-- PostgreSQL database dump
--


-- Dumped from database version 15.20 (Debian 15.20-0+deb12u1)
-- Dumped by pg_dump version 15.20 (Debian 15.20-0+deb12u1)

SET statement_timeout = 0;
SET lock_timeout = 0;
SET idle_in_transaction_session_timeout = 0;
SET client_encoding = 'UTF8';
SET standard_conforming_strings = on;
SELECT pg_catalog.set_config('search_path', '', false);
SET check_function_bodies = false;
SET xmloption = content;
SET client_min_messages = warning;
SET row_security = off;

SET default_tablespace = '';

SET default_table_access_method = heap;

--
-- Name: agencies; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.agencies (
    id integer NOT NULL,
    slug character varying(64) NOT NULL,
    name character varying(200) NOT NULL,
    created_at timestamp without time zone NOT NULL
);


--
-- Name: agencies_id_seq; Type: SEQUENCE; Schema: public; Owner: -
--

CREATE SEQUENCE public.agencies_id_seq
    AS integer
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1;


--
-- Name: agencies_id_seq; Type: SEQUENCE OWNED BY; Schema: public; Owner: -
--

ALTER SEQUENCE public.agencies_id_seq OWNED BY public.agencies.id;


--
-- Name: api_keys; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.api_keys (
    id integer NOT NULL,
    agency_id integer NOT NULL,
    key_hash character varying(64) NOT NULL,
    prefix character varying(16),
    created_at timestamp without time zone NOT NULL,
    revoked_at timestamp without time zone
);


--
-- Name: api_keys_id_seq; Type: SEQUENCE; Schema: public; Owner: -
--

CREATE SEQUENCE public.api_keys_id_seq
    AS integer
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1;


--
-- Name: api_keys_id_seq; Type: SEQUENCE OWNED BY; Schema: public; Owner: -
--

ALTER SEQUENCE public.api_keys_id_seq OWNED BY public.api_keys.id;


--
-- Name: bulletins; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.bulletins (
    id integer NOT NULL,
    guid character varying(45) NOT NULL,
    agency_id integer NOT NULL,
    slug character varying(120) NOT NULL,
    title text NOT NULL,
    summary text,
    body_format character varying(16) NOT NULL,
    body_source text NOT NULL,
    body_html text NOT NULL,
    author character varying(200),
    category character varying(200),
    category_slug character varying(120),
    language character varying(16) NOT NULL,
    published_at timestamp without time zone NOT NULL,
    status character varying(16) NOT NULL,
    revision integer NOT NULL,
    rendered_revision integer NOT NULL,
    attempts integer NOT NULL,
    last_error text,
    pending_since timestamp without time zone,
    content_hash character varying(64),
    idempotency_key character varying(200),
    request_hash character varying(64),
    created_at timestamp without time zone NOT NULL,
    updated_at timestamp without time zone NOT NULL,
    rendered_at timestamp without time zone
);


--
-- Name: bulletins_id_seq; Type: SEQUENCE; Schema: public; Owner: -
--

CREATE SEQUENCE public.bulletins_id_seq
    AS integer
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1;


--
-- Name: bulletins_id_seq; Type: SEQUENCE OWNED BY; Schema: public; Owner: -
--

ALTER SEQUENCE public.bulletins_id_seq OWNED BY public.bulletins.id;


--
-- Name: categories; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.categories (
    id integer NOT NULL,
    slug character varying(120) NOT NULL,
    name character varying(200) NOT NULL
);


--
-- Name: categories_id_seq; Type: SEQUENCE; Schema: public; Owner: -
--

CREATE SEQUENCE public.categories_id_seq
    AS integer
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1;


--
-- Name: categories_id_seq; Type: SEQUENCE OWNED BY; Schema: public; Owner: -
--

ALTER SEQUENCE public.categories_id_seq OWNED BY public.categories.id;


--
-- Name: agencies id; Type: DEFAULT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.agencies ALTER COLUMN id SET DEFAULT nextval('public.agencies_id_seq'::regclass);


--
-- Name: api_keys id; Type: DEFAULT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.api_keys ALTER COLUMN id SET DEFAULT nextval('public.api_keys_id_seq'::regclass);


--
-- Name: bulletins id; Type: DEFAULT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.bulletins ALTER COLUMN id SET DEFAULT nextval('public.bulletins_id_seq'::regclass);


--
-- Name: categories id; Type: DEFAULT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.categories ALTER COLUMN id SET DEFAULT nextval('public.categories_id_seq'::regclass);


--
-- Data for Name: agencies; Type: TABLE DATA; Schema: public; Owner: -
--

INSERT INTO public.agencies VALUES (1, 'bac-kan', 'Sở Y tế Bắc Kạn', '2026-11-30 08:06:33.778551');
INSERT INTO public.agencies VALUES (2, 'ha-noi', 'UBND TP Hà Nội', '2026-11-30 08:06:34.725133');


--
-- Data for Name: api_keys; Type: TABLE DATA; Schema: public; Owner: -
--

INSERT INTO public.api_keys VALUES (1, 1, 'a55cabf1a186db21423be201b3b14f724408faa0576fd164218c661100734106', 'bt_live_e1Fy461A', '2026-11-30 08:06:33.780175', NULL);
INSERT INTO public.api_keys VALUES (2, 2, '3d89338b068c1f3128cb33af112d4f20a1df492091c04aaafde919c184c93c6c', 'bt_live_GoCc_M86', '2026-11-30 08:06:34.726602', NULL);
INSERT INTO public.api_keys VALUES (3, 1, 'ad01b2b767e576ca7232222c875d718df1da74448459b5436b75071e893a0b82', 'bt_live_y_Bt4Jg-', '2026-11-30 08:06:35.668088', '2026-11-30 08:06:36.652377');


--
-- Data for Name: bulletins; Type: TABLE DATA; Schema: public; Owner: -
--

INSERT INTO public.bulletins VALUES (4, 'urn:uuid:cfd58adc-32d5-405b-aed4-5712101040e3', 2, 'lich-tiep-cong-dan-thang-9', 'Lịch tiếp công dân tháng 9', NULL, 'text', 'Lãnh đạo tiếp công dân vào thứ Năm.', '<p>Lãnh đạo tiếp công dân vào thứ Năm.</p>', NULL, 'Y tế', 'y-te', 'vi', '2026-12-30 08:06:37.841676', 'scheduled', 1, 0, 0, NULL, '2026-11-30 08:06:37.9269', 'b45f1ad31de6009f4001a4966a56803e3ecabc51e622fb2a5fc509fdeac44cfe', NULL, 'b45f1ad31de6009f4001a4966a56803e3ecabc51e622fb2a5fc509fdeac44cfe', '2026-11-30 08:06:37.841676', '2026-11-30 08:06:37.841676', NULL);
INSERT INTO public.bulletins VALUES (2, 'urn:uuid:f540ec95-bf12-4949-a3b4-8d2d9cdff5d7', 1, 'quyet-dinh-ve-viec-phong-chong-dich-benh', 'Quyết định về việc phòng, chống dịch bệnh', NULL, 'markdown', '# Quyết định

**Điều 1.** Áp dụng các biện pháp *cấp bách* phòng dịch.', '<h2>Quyết định</h2>
<p><strong>Điều 1.</strong> Áp dụng các biện pháp <em>cấp bách</em> phòng dịch.</p>
', NULL, 'Y tế', 'y-te', 'vi', '2020-08-01 03:30:00', 'published', 1, 1, 0, NULL, NULL, 'f4bb1b17b8baecc2ce9accba0b8edc00c6550e30cd507cdda6b6d8cce92ee673', NULL, 'f4bb1b17b8baecc2ce9accba0b8edc00c6550e30cd507cdda6b6d8cce92ee673', '2026-11-30 08:06:37.841676', '2026-11-30 08:06:37.841676', '2026-11-30 08:06:37.841676');
INSERT INTO public.bulletins VALUES (5, 'urn:uuid:958c7b8e-833f-4585-9d46-6a83e562cfa8', 1, 'thong-bao-tuyen-dung-vien-chuc-nam-2020', 'Thông báo tuyển dụng viên chức năm 2020', NULL, 'text', 'Chi tiết tại trụ sở.', '<p>Chi tiết tại trụ sở.</p>', NULL, NULL, NULL, 'vi', '2026-11-30 08:06:37.841676', 'failed', 1, 0, 5, 'OSError: [Errno 28] Hết dung lượng đĩa', NULL, 'edc516fd7430805d159e483d072d36ad37865f66c5993f50b886f63112b431df', 'phat-hanh-4', 'edc516fd7430805d159e483d072d36ad37865f66c5993f50b886f63112b431df', '2026-11-30 08:06:37.841676', '2026-11-30 08:06:37.841676', NULL);
INSERT INTO public.bulletins VALUES (1, 'urn:uuid:6292c185-06cb-4b5c-a6f9-d1343069e15e', 1, 'thong-bao-tam-dung-cap-nuoc-sinh-hoat-tai-phuong-duc-xuan', 'Thông báo tạm dừng cấp nước sinh hoạt tại phường Đức Xuân (đính chính)', 'Tạm dừng cấp nước để sửa chữa đường ống.', 'text', 'Công ty Cổ phần Cấp thoát nước Bắc Kạn thông báo tạm dừng cấp nước.

Thời gian: từ 8 giờ đến 17 giờ ngày 02/8/2020.', '<p>Công ty Cổ phần Cấp thoát nước Bắc Kạn thông báo tạm dừng cấp nước.</p>
<p>Thời gian: từ 8 giờ đến 17 giờ ngày 02/8/2020.</p>', 'Phòng Hành chính', 'Hạ tầng', 'ha-tang', 'vi', '2020-07-31 01:00:00', 'published', 2, 1, 0, NULL, '2026-11-30 08:06:37.940832', '7e7e9912c868b0567bae6cf609830a4a319ecd47ca7f5569f6e8b5e82ac64f8f', 'phat-hanh-0', '2f602dc28c41f4fb81ad96f4d60eaf7fc667f540e047b2f7452ba3040af759f4', '2026-11-30 08:06:37.841676', '2026-11-30 08:06:37.940832', '2026-11-30 08:06:37.841676');
INSERT INTO public.bulletins VALUES (3, 'urn:uuid:25a0caf4-b6b5-4c62-8f0b-3e56f4eb5ba3', 2, 'canh-bao-khan-cap-mua-lu-tren-song-cau', 'Cảnh báo khẩn cấp: mưa lũ trên sông Cầu', NULL, 'html', '<p>Người dân <strong>không</strong> đi qua ngầm tràn.</p><script>x()</script>', '<p>Người dân <strong>không</strong> đi qua ngầm tràn.</p>', NULL, 'Khẩn cấp', 'khan-cap', 'vi', '2026-11-30 08:06:37.841676', 'withdrawn', 2, 1, 0, NULL, '2026-11-30 08:06:37.944853', '1fef659dcde9a7b5d4de092ea1c467615f3c65c72ed05e0f1426339bea1ec2f6', 'phat-hanh-2', '1fef659dcde9a7b5d4de092ea1c467615f3c65c72ed05e0f1426339bea1ec2f6', '2026-11-30 08:06:37.841676', '2026-11-30 08:06:37.944853', '2026-11-30 08:06:37.841676');


--
-- Data for Name: categories; Type: TABLE DATA; Schema: public; Owner: -
--

INSERT INTO public.categories VALUES (1, 'ha-tang', 'Hạ tầng');
INSERT INTO public.categories VALUES (2, 'y-te', 'Y tế');
INSERT INTO public.categories VALUES (3, 'khan-cap', 'Khẩn cấp');


--
-- Name: agencies_id_seq; Type: SEQUENCE SET; Schema: public; Owner: -
--

SELECT pg_catalog.setval('public.agencies_id_seq', 2, true);


--
-- Name: api_keys_id_seq; Type: SEQUENCE SET; Schema: public; Owner: -
--

SELECT pg_catalog.setval('public.api_keys_id_seq', 3, true);


--
-- Name: bulletins_id_seq; Type: SEQUENCE SET; Schema: public; Owner: -
--

SELECT pg_catalog.setval('public.bulletins_id_seq', 5, true);


--
-- Name: categories_id_seq; Type: SEQUENCE SET; Schema: public; Owner: -
--

SELECT pg_catalog.setval('public.categories_id_seq', 4, true);


--
-- Name: agencies agencies_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.agencies
    ADD CONSTRAINT agencies_pkey PRIMARY KEY (id);


--
-- Name: agencies agencies_slug_key; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.agencies
    ADD CONSTRAINT agencies_slug_key UNIQUE (slug);


--
-- Name: api_keys api_keys_key_hash_key; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.api_keys
    ADD CONSTRAINT api_keys_key_hash_key UNIQUE (key_hash);


--
-- Name: api_keys api_keys_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.api_keys
    ADD CONSTRAINT api_keys_pkey PRIMARY KEY (id);


--
-- Name: bulletins bulletins_guid_key; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.bulletins
    ADD CONSTRAINT bulletins_guid_key UNIQUE (guid);


--
-- Name: bulletins bulletins_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.bulletins
    ADD CONSTRAINT bulletins_pkey PRIMARY KEY (id);


--
-- Name: categories categories_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.categories
    ADD CONSTRAINT categories_pkey PRIMARY KEY (id);


--
-- Name: categories categories_slug_key; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.categories
    ADD CONSTRAINT categories_slug_key UNIQUE (slug);


--
-- Name: bulletins uq_bulletin_idempotency; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.bulletins
    ADD CONSTRAINT uq_bulletin_idempotency UNIQUE (agency_id, idempotency_key);


--
-- Name: ix_bulletin_listing_agency; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX ix_bulletin_listing_agency ON public.bulletins USING btree (agency_id, status, published_at, id);


--
-- Name: ix_bulletin_listing_all; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX ix_bulletin_listing_all ON public.bulletins USING btree (status, published_at, id);


--
-- Name: ix_bulletin_listing_category; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX ix_bulletin_listing_category ON public.bulletins USING btree (category_slug, status, published_at, id);


--
-- Name: ix_bulletin_pending_since; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX ix_bulletin_pending_since ON public.bulletins USING btree (pending_since);


--
-- Name: api_keys api_keys_agency_id_fkey; Type: FK CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.api_keys
    ADD CONSTRAINT api_keys_agency_id_fkey FOREIGN KEY (agency_id) REFERENCES public.agencies(id);


--
-- Name: bulletins bulletins_agency_id_fkey; Type: FK CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.bulletins
    ADD CONSTRAINT bulletins_agency_id_fkey FOREIGN KEY (agency_id) REFERENCES public.agencies(id);


--
-- PostgreSQL database dump complete
--


